"""The edge's web page on :8001: live MJPEG feed, recognizer status, and the enrol (Capture) button.

`create_app(edge_state)` builds the Flask app over objects made in `edge.__main__`; nothing here
owns a thread. Each `/video_feed` viewer waits on the display holder's Condition for the next JPEG
(already encoded once by the display thread), so viewers cost no encoding and nobody polls.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional, Protocol

from flask import Flask, Response, jsonify, redirect, render_template, request, stream_with_context, url_for

from edge.frames import LatestFrame
from shared.names import InvalidName, validate_name

log = logging.getLogger(__name__)

BOUNDARY = "frame"
_VIEWER_WAIT_S = 1.0  # a viewer re-checks `stop` this often while no frame comes


class Link(Protocol):
    """What the page needs from `edge.link.RecognizerLink`."""

    def status(self) -> dict: ...

    def enrol(self, name: str, timeout: float = 10.0) -> dict: ...


@dataclass
class EdgeState:
    """What the web app reads: the display JPEGs, the link, and the process-wide stop event."""

    display: LatestFrame
    link: Link
    stop: threading.Event
    station: str = "edge"
    feed_mode: Callable[[], str] = lambda: "unknown"
    camera_status: Callable[[], dict] = dict
    enrol_timeout_s: float = 10.0
    _viewers: int = field(default=0, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def viewer_joined(self) -> int:
        with self._lock:
            self._viewers += 1
            return self._viewers

    def viewer_left(self) -> int:
        with self._lock:
            self._viewers -= 1
            return self._viewers

    @property
    def viewers(self) -> int:
        with self._lock:
            return self._viewers


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


def create_app(edge_state: EdgeState, test_config: Optional[dict] = None) -> Flask:
    """The edge's Flask app over `edge_state`."""
    app = Flask(__name__)
    app.config.from_mapping(JSON_SORT_KEYS=False)
    if test_config:
        app.config.update(test_config)
    state = edge_state

    @app.get("/")
    def index() -> Response:
        return redirect(url_for("video_feed_page"))

    @app.get("/video_feed_page")
    def video_feed_page() -> str:
        return render_template("video_feed_page.html", station=state.station)

    @app.get("/video_feed")
    def video_feed() -> Response:
        viewer = f"{request.remote_addr}:{request.environ.get('REMOTE_PORT', '?')}"
        response = Response(
            stream_with_context(mjpeg_stream(state, viewer)),
            mimetype=f"multipart/x-mixed-replace; boundary={BOUNDARY}",
        )
        response.headers["Cache-Control"] = "no-cache, no-store, must-revalidate"
        response.headers["X-Accel-Buffering"] = "no"  # tell a reverse proxy not to buffer the stream
        return response

    @app.get("/api/status")
    def api_status() -> Response:
        body = dict(state.link.status())
        body["feed"] = state.feed_mode()
        body["viewers"] = state.viewers
        body["camera"] = state.camera_status()
        response = jsonify(body)
        response.headers["Cache-Control"] = "no-store"
        return response

    @app.post("/api/capture")
    def api_capture() -> tuple[Response, int]:
        payload = request.get_json(silent=True) if request.is_json else request.form
        raw_name = (payload or {}).get("name", "")
        try:
            name = validate_name(raw_name)
        except InvalidName as exc:
            return jsonify({"ok": False, "code": "invalid_name", "reason": str(exc)}), 400
        answer = state.link.enrol(name, timeout=state.enrol_timeout_s)
        code = answer.get("code")
        http_status = 503 if code in ("offline", "timeout", "no_frame") else 400 if code == "invalid_name" else 200
        log.info("capture for %r: ok=%s %s", name, answer.get("ok"), answer.get("reason"))
        return jsonify(answer), http_status

    return app
