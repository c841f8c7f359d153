"""The desk's API: `GET /api/status` (recognizer link, feed, viewers, camera, faces shown) and `POST /api/capture`
(the Capture button: enrol the face on screen under a name, with the dashboard's grant when sign-in is on)."""
from __future__ import annotations

import base64
import logging

from flask import Blueprint, Response, abort, jsonify, request

from edge.auth import may_enrol, record_enrolment
from edge.web.access import require_viewer, signed_in
from edge.web.state import edge_state
from shared.names import InvalidName, validate_name
from shared.results import faces_to_wire

log = logging.getLogger(__name__)
bp = Blueprint("desk_api", __name__)


@bp.get("/api/status")
def api_status() -> Response:
    require_viewer()
    state = edge_state()
    body = dict(state.link.status())
    body["feed"] = state.feed_mode()
    body["viewers"] = state.viewers
    body["camera"] = state.camera_status()
    shown = state.display.latest()
    # the faces of the picture on the page now (none on a raw, offline or camera-lost picture)
    body["shown_faces"] = faces_to_wire(shown.meta) if shown is not None and shown.meta is not None else []
    response = jsonify(body)
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.post("/api/capture")
def api_capture() -> tuple[Response, int]:
    state = edge_state()
    auth = state.auth
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
    confirm = (payload or {}).get("confirm_lookalike") or ""  # an admin's deliberate "yes, enrol despite the likeness"
    if not isinstance(confirm, str) or len(confirm) > 64:
        return jsonify({"ok": False, "code": "invalid_name", "reason": "confirm_lookalike must be a person's name"}), 400
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
    answer = state.link.enrol(name, timeout=state.enrol_timeout_s, grant=grant, confirm_lookalike=confirm)
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
