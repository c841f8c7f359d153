"""The live feed: `GET /video_feed`, an MJPEG stream of the display JPEGs.

Each viewer waits on the display holder's Condition for the next JPEG (already encoded once by the
display thread), so viewers cost no encoding and nobody polls.
"""
from __future__ import annotations

import logging
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
    count = state.viewer_joined()
    log.info("viewer %s joined the feed (%d watching)", viewer, count)
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
    finally:
        log.info("viewer %s dropped (%d watching)", viewer, state.viewer_left())


@bp.get("/video_feed")
def video_feed() -> Response:
    require_viewer()
    viewer = f"{request.remote_addr}:{request.environ.get('REMOTE_PORT', '?')}"
    response = Response(
        stream_with_context(mjpeg_stream(edge_state(), viewer)),
        mimetype=f"multipart/x-mixed-replace; boundary={BOUNDARY}",
    )
    response.headers["Cache-Control"] = "no-cache, no-store, must-revalidate"
    response.headers["X-Accel-Buffering"] = "no"  # tell a reverse proxy not to buffer the stream
    return response
