"""Gallery endpoints for recognizer nodes and facemon-enrol (service token).

- `GET /api/gallery/changes?after=N&wait=S&limit=L`: the changes numbered above N, oldest first, as
  `{head, changes: [{seq, op: add|remove, person, id, vector (base64 of 128 little-endian float32), model, source}],
  more}`. With `wait` (seconds, at most 30) and nothing new, the answer waits until a change is committed: a
  long-poll, woken at once by a write in this process and by a 0.25 s look at the head otherwise (another
  dashboard process, or a direct database write). At most 64 wait at once (each holds a server thread); beyond,
  503 with Retry-After.
- `POST /api/gallery/encodings`: `{person, vector, model, source, photo_sha256, enrolled_by, station_id?,
  grant_id?, photo? (base64 JPEG)}` → 201 `{change}`, or 200 `{change, duplicate: true}` when that person already
  has an encoding from the same photo.
- `DELETE /api/gallery/people/<name>`: removes the person (their encodings and photos) → `{removed, seq}`.
- `GET /api/gallery/people`: people with their encodings' provenance (no vectors, no photos).
"""
from __future__ import annotations

import base64
import binascii
import logging
import time

from flask import Blueprint, Flask, abort, current_app, jsonify, request

from dashboard import audit, gallery, person_data
from dashboard.api_requests import bearer_caller, json_object
from dashboard.images import BadImage, check_jpeg
from dashboard.services import services
from dashboard.station_tokens import Caller
from shared.names import InvalidName, validate_name
from shared.lognames import who

log = logging.getLogger(__name__)
bp = Blueprint("gallery_api", __name__)
NOTIFIER_EXT = "facemon.gallery"
MAX_WAIT_S = 30.0
POLL_S = 0.25  # how often a waiting long-poll looks at the head for writes made by another process
MAX_LIMIT = 1000
MAX_WAITERS = 64  # long-polls waiting at once (one per node is the normal load); beyond, 503 and retry


@bp.record_once
def _setup(state) -> None:  # noqa: ANN001 - flask BlueprintSetupState
    state.app.extensions[NOTIFIER_EXT] = gallery.ChangeNotifier(MAX_WAITERS)


def notifier(app: Flask | None = None) -> gallery.ChangeNotifier:
    return (app or current_app).extensions[NOTIFIER_EXT]


def _service() -> Caller:
    caller = bearer_caller()
    if caller.kind != "service":
        abort(403, "the gallery is read and written with a service token (a recognizer node or facemon-enrol)")
    return caller


def _int_arg(name: str, default: int, lo: int, hi: int) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        abort(400, f"{name} must be a whole number")
    if not lo <= value <= hi:
        abort(400, f"{name} must be {lo}..{hi}, got {value}")
    return value


@bp.get("/api/gallery/changes")
def changes():  # noqa: ANN201
    _service()
    after = _int_arg("after", 0, 0, 2**62)
    limit = _int_arg("limit", 500, 1, MAX_LIMIT)
    try:
        wait_s = float(request.args.get("wait", 0))
    except ValueError:
        wait_s = -1.0
    if not 0 <= wait_s <= 3600:  # also NaN
        abort(400, f"wait must be a number of seconds, 0 to 3600 (it is cut to {MAX_WAIT_S:g})")
    wait_s = min(wait_s, MAX_WAIT_S)
    waiting = wait_s > 0 and notifier().enter()
    if wait_s > 0 and not waiting:
        resp = jsonify(error=f"{MAX_WAITERS} followers are waiting already; retry in a few seconds")
        resp.status_code, resp.headers["Retry-After"] = 503, "5"
        return resp
    try:
        return _changes_after(after, limit, time.monotonic() + wait_s)
    finally:
        if waiting:
            notifier().leave()


def _changes_after(after: int, limit: int, deadline: float):  # noqa: ANN202 - a Flask response
    while True:
        with services().sessions() as db:
            found, head = gallery.changes_after(db, after, limit)
        if after > head:
            abort(409, f"change {after} is newer than this gallery's last ({head}): the node follows another "
                       "database; drop its local copy")
        left = deadline - time.monotonic()
        if found or left <= 0:
            more = bool(found) and found[-1]["seq"] < head
            return jsonify(head=head, changes=found, more=more)
        notifier().wait_past(after, min(left, POLL_S))


def _b64(body: dict, key: str, required: bool) -> bytes | None:
    value = body.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str):
        abort(400, f"{key} must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        abort(400, f"{key} is not valid base64")


@bp.post("/api/gallery/encodings")
def add():  # noqa: ANN201
    caller = _service()
    body = json_object()
    try:
        person = validate_name(body.get("person"), "person")
        station = None if body.get("station_id") in (None, "") else validate_name(body.get("station_id"), "station_id")
    except InvalidName as exc:
        abort(400, str(exc))
    grant_id = body.get("grant_id")
    if grant_id is not None and (isinstance(grant_id, bool) or not isinstance(grant_id, int) or grant_id < 1):
        abort(400, "grant_id must be a positive whole number")
    photo = _b64(body, "photo", required=False)
    if photo is not None:
        try:
            check_jpeg(photo, "photo")
        except BadImage as exc:
            abort(400, str(exc))
    try:
        new = gallery.NewEncoding(
            person=person, vector=_b64(body, "vector", required=True), model=body.get("model"),
            source=body.get("source"), photo_sha256=body.get("photo_sha256") if isinstance(body.get("photo_sha256"), str) else "",
            enrolled_by=body.get("enrolled_by"), via=caller.name, station_id=station, grant_id=grant_id, photo=photo,
            **_notice(body, grant_id),
        )
    except gallery.BadEncoding as exc:
        abort(400, str(exc))
    # a Capture at a desk or a facemon-enrol import: audited like an upload on the People page, in the same transaction
    change, created = gallery.add_encoding(services().writer, new, also=lambda db: audit.record(
        db, new.enrolled_by, "enrol", person, f"{new.source} via {caller.name}"[:512]))
    if not created:
        return jsonify(change=change, duplicate=True), 200
    notifier().committed(change["seq"])
    log.info("gallery change %d: %s enrolled %s (%s) via %s", change["seq"], new.enrolled_by, who(person), new.source, caller.name)
    return jsonify(change=change), 201


def _notice(body: dict, grant_id: int | None) -> dict:
    """The notice a person was shown and who confirmed it: as sent, else for a Capture (an admin's grant) the
    dashboard's current notice, confirmed by that admin (who must show it before pressing Capture)."""
    version, by = body.get("notice_version"), body.get("notice_confirmed_by")
    for name, value in (("notice_version", version), ("notice_confirmed_by", by)):
        if value is not None and (not isinstance(value, str) or not 0 < len(value) <= (32 if name == "notice_version" else 64)):
            abort(400, f"{name} must be a short string")
    if version is None and grant_id is not None:
        version, by = services().config.notice_version, by or body.get("enrolled_by")
    return {"notice_version": version, "notice_confirmed_by": by if version else None}


@bp.delete("/api/gallery/people/<name>")
def remove(name: str):  # noqa: ANN201
    caller = _service()
    try:
        person = validate_name(name, "person")
    except InvalidName as exc:
        abort(400, str(exc))
    removed, _faces, seq = person_data.erase_person(services().writer, person, caller.name)
    if not removed:
        abort(404, f"nobody named {person!r} is enrolled")
    notifier().committed(seq)
    log.info("gallery change %d: %s removed (%d encodings) by %s", seq, who(person), removed, caller.name)
    return jsonify(removed=removed, seq=seq)


@bp.get("/api/gallery/people")
def list_people():  # noqa: ANN201
    _service()
    with services().sessions() as db:
        return jsonify(people=gallery.people(db), head=gallery.head_seq(db))
