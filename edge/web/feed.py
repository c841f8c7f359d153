"""The live feed: `GET /video_feed`, an MJPEG stream of the display JPEGs.

Each viewer waits on the display holder's Condition for the next JPEG (already encoded once by the
display thread), so viewers cost no encoding and nobody polls. Each viewer holds one of the web server's threads while it
watches, so at most `EdgeState.max_viewers` watch at once; one more is answered 503 with a reason (the page
retries by itself), and the threads left over keep serving the page, status and sign-in.
"""
from __future__ import annotations

import logging
import threading
from typing import Iterator

from flask import Blueprint, Response, request, stream_with_context

from edge.web.access import require_viewer
from edge.web.state import EdgeState, edge_state

log = logging.getLogger(__name__)
bp = Blueprint("feed", __name__)

BOUNDARY = "frame"
_VIEWER_WAIT_S = 1.0  # a viewer re-checks `stop` this often while no frame comes


def mjpeg_part(jpeg: bytes) -> bytes:
    """One part of a multipart/x-mixed-replace stream carrying one JPEG."""
    head = f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n".encode("ascii")
    return head + jpeg + b"\r\n"


def mjpeg_stream(state: EdgeState, viewer: str) -> Iterator[bytes]:
    """Yield a part per new display frame until the edge stops or the viewer goes away."""
    last = 0
    sent = 0
    try:
        while not state.stop.is_set():
            frame = state.display.wait_for_frame(last, timeout=_VIEWER_WAIT_S)
            if frame is None:
                if state.display.closed:
                    break
                continue
            last = frame.seq
            yield mjpeg_part(frame.data)
            sent += 1
    except GeneratorExit:
        log.info("viewer %s disconnected after %d frames", viewer, sent)
        raise


@bp.get("/video_feed")
def video_feed() -> Response:
    require_viewer()
    state = edge_state()
    viewer = f"{request.remote_addr}:{request.environ.get('REMOTE_PORT', '?')}"
    count = state.join_viewer(state.max_viewers)  # taken before the stream starts: viewers at once are counted
    if count is None:
        log.warning("viewer %s turned away: %d watching already (the most)", viewer, state.max_viewers)
        response = Response(f"{state.max_viewers} viewers are watching this desk already (the most it serves); "
                            "try again later\n", status=503, mimetype="text/plain")
        response.headers["Retry-After"] = "10"
        return response
    log.info("viewer %s joined the feed (%d watching)", viewer, count)
    response = Response(
        stream_with_context(mjpeg_stream(state, viewer)),
        mimetype=f"multipart/x-mixed-replace; boundary={BOUNDARY}",
    )
    left = threading.Event()

    def _left() -> None:  # the server closes every response, streamed or not, so the place is always given back
        if not left.is_set():
            left.set()
            log.info("viewer %s dropped (%d watching)", viewer, state.viewer_left())

    response.call_on_close(_left)
    response.headers["Cache-Control"] = "no-cache, no-store, must-revalidate"
    response.headers["X-Accel-Buffering"] = "no"  # tell a reverse proxy not to buffer the stream
    return response
