"""The edge's web page on :8001: live MJPEG feed, recognizer status, and the enrol (Capture) button.

`create_app(edge_state)` builds the Flask app over objects made in `edge.__main__`; nothing here
owns a thread. Each `/video_feed` viewer waits on the display holder's Condition for the next JPEG
(already encoded once by the display thread), so viewers cost no encoding and nobody polls.
"""
from __future__ import annotations

import base64
import hmac
import logging
import secrets
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional, Protocol

from flask import Flask, Response, abort, jsonify, redirect, render_template, request, session, stream_with_context, url_for

from edge.auth import EdgeSession, SignIn, may_enrol, may_view, record_enrolment
from edge.frames import LatestFrame
from shared.names import InvalidName, validate_name

log = logging.getLogger(__name__)

BOUNDARY = "frame"
_VIEWER_WAIT_S = 1.0  # a viewer re-checks `stop` this often while no frame comes


class Link(Protocol):
    """What the page needs from `edge.link.RecognizerLink`."""

    def status(self) -> dict: ...

    def enrol(self, name: str, timeout: float = 10.0, grant: str = "") -> dict: ...


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
    auth: Optional[SignIn] = None  # None: the page is open (--auth off, the standalone demo)
    secret_key: str = ""  # signs the session cookie when auth is on
    enrolment_log: Optional[Path] = None  # who enrolled whom and when (JSON lines), when auth is on
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
    state = edge_state
    auth = state.auth
    if auth is not None:
        if len(state.secret_key) < 32:
            raise ValueError("auth is on but the session key is missing or shorter than 32 characters")
        app.config.update(SECRET_KEY=state.secret_key, SESSION_COOKIE_HTTPONLY=True,
                          SESSION_COOKIE_SAMESITE="Strict", SESSION_COOKIE_NAME="facemon_edge")
    if test_config:
        app.config.update(test_config)

    def signed_in() -> Optional[EdgeSession]:
        return auth.session(session.get("sid")) if auth is not None else None

    def require_viewer() -> None:
        """401 without a session, 403 for a role that may not watch this desk (no-op when auth is off)."""
        if auth is None:
            return
        who = signed_in()
        if who is None:
            abort(401, "sign in first")
        if not may_view(who, auth.desk()):
            abort(403, "only staff, admins and the evaluator signed in at this desk may watch it")

    def csrf_token() -> str:
        if "csrf" not in session:
            session["csrf"] = secrets.token_urlsafe(24)
        return session["csrf"]

    @app.before_request
    def _check_csrf() -> None:
        if auth is not None and request.method == "POST":
            sent = request.headers.get("X-CSRF-Token", "") or request.form.get("csrf_token", "")
            if not sent or not hmac.compare_digest(sent, session.get("csrf", "")):
                abort(403, "missing or wrong CSRF token; reload the page")

    @app.errorhandler(401)
    @app.errorhandler(403)
    def _json_error(exc):  # noqa: ANN001, ANN202
        return jsonify({"ok": False, "code": exc.code, "reason": exc.description}), exc.code

    @app.get("/")
    def index() -> Response:
        return redirect(url_for("video_feed_page"))

    @app.get("/video_feed_page")
    def video_feed_page():  # noqa: ANN202
        who = signed_in()
        if auth is not None and not may_view(who, auth.desk()):
            return redirect(url_for("signin_page"))
        return render_template("video_feed_page.html", station=state.station, auth=auth is not None, user=who,
                               can_enrol=auth is None or may_enrol(who), csrf=csrf_token() if auth else "")

    @app.get("/signin")
    def signin_page():  # noqa: ANN202
        if auth is None:
            return redirect(url_for("video_feed_page"))
        return render_template("signin.html", station=state.station, csrf=csrf_token(), user=signed_in(),
                               needed=auth.settings.verify_frames, timeout=auth.settings.verify_timeout_s)

    @app.post("/api/signin")
    def api_signin():  # noqa: ANN202
        if auth is None:
            abort(404, "sign-in is off at this edge (--auth off)")
        payload = request.get_json(silent=True) if request.is_json else request.form
        username = str((payload or {}).get("username", ""))
        password = str((payload or {}).get("password", ""))
        session.pop("sid", None)
        session.pop("attempt", None)
        status, body = auth.password(username, password)
        if "sid" in body:  # staff/admin without an enrolled face: signed in by password
            session["sid"] = body.pop("sid")
        if "attempt" in body:  # the face check runs; the cookie names the attempt, which is not a session
            session["attempt"] = body.pop("attempt")
        return jsonify(body), status

    @app.get("/api/signin/progress")
    def api_signin_progress():  # noqa: ANN202
        if auth is None:
            abort(404, "sign-in is off at this edge (--auth off)")
        body = auth.progress(session.get("attempt", ""))
        if body is None:
            abort(404, "no sign-in in progress")
        if body["state"] == "signed_in":
            session["sid"] = body.pop("sid")
            session.pop("attempt", None)
        elif body["state"] == "failed":
            session.pop("attempt", None)
        return jsonify(body)

    @app.post("/api/signout")
    def api_signout():  # noqa: ANN202
        if auth is None:
            abort(404, "sign-in is off at this edge (--auth off)")
        ended = auth.sign_out(session.pop("sid", None))
        return jsonify({"ok": ended})

    @app.get("/api/whoami")
    def api_whoami():  # noqa: ANN202
        """The caller's own session only; who sits at the desk is told to those allowed to watch it."""
        who = signed_in()
        desk = auth.desk() if auth is not None else None
        return jsonify({"auth": auth is not None, "signed_in": who is not None,
                        "username": who.username if who else None, "role": who.role if who else None,
                        "desk": desk.username if desk is not None and may_view(who, desk) else None})

    @app.get("/video_feed")
    def video_feed() -> Response:
        require_viewer()
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
        require_viewer()
        body = dict(state.link.status())
        body["feed"] = state.feed_mode()
        body["viewers"] = state.viewers
        body["camera"] = state.camera_status()
        shown = state.display.latest()
        # the faces of the picture on the page now (none on a raw, offline or camera-lost picture)
        body["shown_faces"] = list(shown.meta) if shown is not None and shown.meta is not None else []
        response = jsonify(body)
        response.headers["Cache-Control"] = "no-store"
        return response

    @app.post("/api/capture")
    def api_capture() -> tuple[Response, int]:
        by = ""
        who = None
        if auth is not None:
            who = signed_in()
            if who is None:
                abort(401, "sign in first")
            if not may_enrol(who):
                abort(403, "only an admin may enrol faces")
            by = who.username
        payload = request.get_json(silent=True) if request.is_json else request.form
        raw_name = (payload or {}).get("name", "")
        try:
            name = validate_name(raw_name)
        except InvalidName as exc:
            return jsonify({"ok": False, "code": "invalid_name", "reason": str(exc)}), 400
        camera = state.camera_status()
        if camera.get("state") == "lost":  # the last frame is old: it may show someone long gone
            reason = f"camera lost ({camera.get('error') or 'no frames'}); nothing to capture"
            return jsonify({"ok": False, "code": "camera_lost", "reason": reason, "name": name}), 503
        grant = ""
        if auth is not None and who is not None:  # the recognizer enrols only with the dashboard's grant
            status, body = auth.enrol_grant(who, name)
            if status != 201:
                return jsonify({**body, "name": name}), status
            grant = body["grant"]
        answer = state.link.enrol(name, timeout=state.enrol_timeout_s, grant=grant)
        if state.enrolment_log is not None and by:
            record_enrolment(state.enrolment_log, by, name, answer)
        answer = dict(answer)
        crop = answer.pop("crop", None)
        if crop:  # the face that was enrolled, for the page to show
            answer["crop_jpeg"] = base64.b64encode(crop).decode("ascii")
        code = answer.get("code")
        http_status = 503 if code in ("offline", "timeout", "no_frame", "camera_lost") else 400 if code == "invalid_name" else 200
        log.info("capture for %r%s: ok=%s %s", name, f" by {by}" if by else "", answer.get("ok"), answer.get("reason"))
        return jsonify(answer), http_status

    return app
