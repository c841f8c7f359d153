"""Alerts HTTP API: alerts and station status in (station token); alerts, evidence and stations out, CSV export
and live events (viewer session)."""
from __future__ import annotations

import csv
import datetime as dt
import io
import json
import logging
from typing import Optional

from flask import Blueprint, Response, abort, jsonify, request, stream_with_context

from dashboard import handover, review_queue, stations, store
from dashboard.api_requests import bearer_caller
from dashboard.audit_pages import look
from dashboard.db import get_db
from dashboard.images import BadImage, check_jpeg
from dashboard.ingest import parse_legacy
from dashboard.models import Alert, utcnow
from dashboard.queries import alerts_page, filter_from_args
from dashboard.services import services
from dashboard.station_tokens import Caller
from dashboard.stations import StatusReport
from dashboard.web_security import login_required
from shared.alert_wire import AlertMessage, BadAlert, parse_login, parse_meta, parse_station, parse_time
from shared.station_state import BadStationState, parse_degraded

log = logging.getLogger(__name__)
CAMERA_STATES = ("ok", "lost", "unknown")
bp = Blueprint("alerts_api", __name__)


def _store(caller: Caller, msg: AlertMessage, image: Optional[bytes], best: Optional[bytes]):  # noqa: ANN202
    if not caller.may_post_for(msg.station_id):
        abort(403, f"this token belongs to station {caller.name!r} and may not post for {msg.station_id!r}")
    for what, data in (("image", image), ("best_image", best)):
        if data is not None:
            try:
                check_jpeg(data, what)
            except BadImage as exc:
                abort(400, str(exc))
    if msg.state == "open" and image is None:
        abort(400, "an 'open' event needs the part 'image' (the JPEG evidence)")
    face = msg.details.pop("face", None)  # an unknown face's crop and encoding: the review queue's, not the row's
    try:
        outcome = store.apply_event(services().writer, msg, image, best)
    except store.Conflict as exc:
        abort(409, str(exc))
    if outcome.status == "duplicate":
        log.debug("duplicate event %s ignored", msg.event_id)
        return jsonify(status="duplicate", alert_id=outcome.alert_id), 200
    log.info("alert %s %s: %s %s at %s", outcome.alert_id, outcome.status, msg.type, msg.state, msg.station_id)
    if face is not None:
        _queue_for_review(face, msg)
    services().broker.publish("alert", json.dumps({"alert_id": outcome.alert_id, "status": outcome.status}))
    return jsonify(status=outcome.status, alert_id=outcome.alert_id), 201


def _queue_for_review(face: object, msg: AlertMessage) -> None:
    """The alert's face into the review queue; a bad face is logged and never costs the alert."""
    try:
        review_queue.add_face(services().writer, review_queue.parse_face(
            face, msg.alert_id, msg.station_id, msg.ended_at or msg.started_at), services().review_index,
            services().config.review_max_queued_per_station)
    except review_queue.BadFace as exc:
        log.warning("alert %s: its face is not queued for review: %s", msg.alert_id, exc)


@bp.post("/api/alerts")
def post_alert():  # noqa: ANN201
    caller = bearer_caller()
    if request.mimetype != "multipart/form-data":
        abort(400, f"content type must be multipart/form-data with parts 'meta' and 'image', not {request.mimetype or 'none'!r}")
    meta = request.form.get("meta")
    if meta is None and "meta" in request.files:
        meta = request.files["meta"].read()
    if meta is None:
        abort(400, "missing part 'meta' (the alert JSON)")
    try:
        msg = parse_meta(meta, services().config.max_details_bytes)
    except BadAlert as exc:
        abort(400, str(exc))
    return _store(caller, msg, _file_part("image"), _file_part("best_image"))


def _file_part(name: str) -> Optional[bytes]:
    if name in request.files:
        return request.files[name].read()
    if name in request.form:
        abort(400, f"part {name!r} must be sent as a file (with a filename and Content-Type image/jpeg)")
    return None


@bp.post("/dashboard")
def post_legacy():  # noqa: ANN201
    """The seeds' shape: JSON {login_name, time, type, image(base64)}, station_id optional."""
    caller = bearer_caller()
    if not request.is_json:
        abort(400, f"content type must be application/json, not {request.mimetype or 'none'!r}")
    body = request.get_json(silent=True)
    if body is None:
        abort(400, "body is not valid JSON")
    try:
        msg, image = parse_legacy(body, caller.name if caller.kind == "station" else None, utcnow())
    except BadAlert as exc:
        abort(400, str(exc))
    return _store(caller, msg, image, None)


@bp.post("/api/stations/<station_id>/status")
def post_status(station_id: str):  # noqa: ANN201
    caller = bearer_caller()
    try:
        station_id = parse_station(station_id)
    except BadAlert as exc:
        abort(400, str(exc))
    if not caller.may_post_for(station_id):
        abort(403, f"this token belongs to station {caller.name!r} and may not report for {station_id!r}")
    body = request.get_json(silent=True) if request.is_json else None
    if not isinstance(body, dict):
        abort(400, "body must be a JSON object {fps, recognizer_connected, silent_s, login_name, faces, camera, camera_error, degraded}")
    fps, rec, faces = body.get("fps"), body.get("recognizer_connected"), body.get("faces")
    if fps is not None and (isinstance(fps, bool) or not isinstance(fps, (int, float)) or not 0 <= fps <= 1000):
        abort(400, "fps must be a number from 0 to 1000")
    if rec is not None and not isinstance(rec, bool):
        abort(400, "recognizer_connected must be true or false")
    if faces is not None and (isinstance(faces, bool) or not isinstance(faces, int) or not 0 <= faces <= 1000):
        abort(400, "faces must be a whole number from 0 to 1000")
    silent = body.get("silent_s")
    if silent is not None and (isinstance(silent, bool) or not isinstance(silent, (int, float)) or not 0 <= silent <= 86400):
        abort(400, "silent_s must be a number of seconds from 0 to 86400")
    camera, camera_error = body.get("camera"), body.get("camera_error")
    if camera is not None and camera not in CAMERA_STATES:
        abort(400, f"camera must be one of {', '.join(CAMERA_STATES)}")
    if camera_error is not None and not isinstance(camera_error, str):
        abort(400, "camera_error must be text")
    try:
        login = parse_login(body.get("login_name"))
        degraded = parse_degraded(body.get("degraded"))
    except (BadAlert, BadStationState) as exc:
        abort(400, str(exc))
    svc = services()
    report = StatusReport(None if fps is None else float(fps), rec, login or None, faces, camera,
                          (camera_error or "")[:200] or None, degraded, None if silent is None else float(silent))
    state = stations.record_status(svc.writer, station_id, report, svc.station_rules, svc.broker.publish)
    session = handover_session(body)
    if session is not None:
        for alert_id in handover.record_session(svc.writer, station_id, *session):
            svc.broker.publish("alert", json.dumps({"alert_id": alert_id, "status": "updated"}))
    svc.broker.publish("station", json.dumps({"station_id": station_id}))
    return jsonify(status="ok", state=state.state), 200


def handover_session(body: dict) -> Optional[tuple[str, str, dt.datetime]]:
    """(node, session, connected_at) of a status report from a pool node; None when it names none."""
    node, session, since = body.get("node"), body.get("session"), body.get("connected_at")
    if node is None and session is None:
        return None
    if not (isinstance(node, str) and 0 < len(node) <= 128 and isinstance(session, str) and 0 < len(session) <= 160):
        abort(400, "node and session must be strings of at most 128 and 160 characters")
    try:
        return node, session, parse_time(since, "connected_at")
    except BadAlert as exc:
        abort(400, str(exc))


@bp.get("/api/alerts")
@login_required()
def get_alerts():  # noqa: ANN201
    alerts, total, page, per_page = alerts_page(request.args)
    look("alerts.list", f"{len(alerts)} alerts", request.query_string.decode(errors="replace")[:500] or "all")
    return jsonify(alerts=alerts, page=page, per_page=per_page, total=total)


def _alert_or_404(alert_id: str) -> Alert:
    alert = get_db().get(Alert, alert_id.lower())
    if alert is None:
        abort(404, f"no alert {alert_id[:40]!r}")
    return alert


@bp.get("/api/alerts/<alert_id>")
@login_required()
def get_alert(alert_id: str):  # noqa: ANN201
    alert = _alert_or_404(alert_id)
    kinds = store.evidence_kinds(get_db(), [alert.alert_id])[alert.alert_id]
    return jsonify(store.alert_to_dict(alert, kinds))


@bp.get("/api/alerts/<alert_id>/<any(image, best_image, thumb):which>")
@login_required()
def get_image(alert_id: str, which: str):  # noqa: ANN201
    alert = _alert_or_404(alert_id)
    data = store.get_evidence(get_db(), alert.alert_id, {"best_image": "best"}.get(which, which))
    if data is None:
        if alert.evidence_purged_at is not None:
            abort(410, "the evidence of this alert was purged by the retention policy")
        abort(404, f"this alert has no {which}")
    if which != "thumb":  # the full frame is the look; thumbnails are the alert list's (audited as alerts.list)
        look("evidence.view", f"alert {alert.alert_id}", which)
    resp = Response(data, mimetype="image/jpeg")
    resp.headers["Cache-Control"] = "private, max-age=300"
    return resp


@bp.get("/api/stations")
@login_required()
def get_stations():  # noqa: ANN201
    return jsonify(stations=stations.list_stations(get_db(), services().station_rules))


CSV_COLUMNS = ("alert_id", "station_id", "login_name", "type", "state", "started_at", "ended_at",
               "acknowledged_at", "acknowledged_by", "ack_comment", "details")


@bp.get("/api/alerts.csv")
@login_required()
def get_csv():  # noqa: ANN201
    flt = filter_from_args(request.args)
    look("alerts.csv", "alerts", request.query_string.decode(errors="replace")[:500] or "all")
    factory = services().sessions

    def rows():  # noqa: ANN202 - streamed so a large export never sits in memory
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(CSV_COLUMNS)
        with factory() as db:
            for alert in store.iter_alerts(db, flt):
                d = store.alert_to_dict(alert, set())
                d["details"] = json.dumps(d["details"], separators=(",", ":"))
                writer.writerow([_csv_safe(d[c]) for c in CSV_COLUMNS])
                if buf.tell() > 64 * 1024:
                    yield buf.getvalue()
                    buf.seek(0)
                    buf.truncate()
        yield buf.getvalue()

    resp = Response(stream_with_context(rows()), mimetype="text/csv")
    resp.headers["Content-Disposition"] = f"attachment; filename=facemon-alerts-{utcnow():%Y%m%d-%H%M%S}.csv"
    return resp


def _csv_safe(value: object) -> object:
    """Text a spreadsheet would run as a formula gets a leading apostrophe."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return "" if value is None else value


@bp.get("/api/events")
@login_required()
def events():  # noqa: ANN201
    svc = services()
    # each stream holds one of the web server's threads for its life: at most max_live_streams of them
    sub = svc.broker.subscribe(limit=svc.config.max_live_streams)
    if sub is None:
        svc.refusals.warning("live page from %s turned away: %d live pages open", request.remote_addr,
                             svc.config.max_live_streams)
        stream = svc.broker.busy(svc.config.max_live_streams)
    else:
        stream = svc.broker.stream(sub, svc.config.sse_heartbeat_s)
    resp = Response(stream, mimetype="text/event-stream")
    resp.headers["Cache-Control"] = "no-cache"
    resp.headers["X-Accel-Buffering"] = "no"
    return resp
