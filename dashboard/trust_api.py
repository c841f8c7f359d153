"""Trust endpoints: enrol grants for a signed-in admin's desk, grant redemption and station checks for recognizers.

- `POST /api/enrol/grants` (station token): `{ticket, identity}` → 201 `{grant, expires_at, admin, station_id,
  identity}`. The ticket is the one `/api/auth/check` gave an admin at this station.
- `POST /api/enrol/redeem` (service token): `{grant, station_id, identity}` → 200 `{ok, grant_id, admin}` or 403
  `{ok: false, code, error}`. Burns the grant whatever the answer.
- `POST /api/enrol/outcome` (service token): `{grant_id, ok, reason}` → 200: what the enrolment came to.
- `POST /api/stations/verify` (service token): `{station_id, credential}` → 200 `{ok: true}` or 403
  `{ok: false, error}`: whether a HELLO's station id and credential belong together.
- `POST /api/stations/credentials` (service token): `{credentials: [{station_id, digest}]}` (at most 1024; digest:
  SHA-256 hex of the credential) → 200 `{ok: true, valid: [bool, ...]}`: the recognizer's revocation sync of its
  live sessions (a revoked one is disconnected), and the last word the outage grace rests on.

Refused claims are logged through a limiter (five lines a minute per caller, then "... and N more"), so a flood
of made-up HELLOs at a recognizer is not a flood of log here.
"""
from __future__ import annotations

import logging

from flask import Blueprint, abort, jsonify

from dashboard import grants, station_tokens
from dashboard.api_requests import bearer_caller, json_object
from dashboard.services import services
from dashboard.station_tokens import Caller
from shared.names import InvalidName, validate_name
from shared.lognames import who

log = logging.getLogger(__name__)
bp = Blueprint("trust_api", __name__)


def _service() -> Caller:
    caller = bearer_caller()
    if caller.kind != "service":
        abort(403, "only a recognizer's service token may do this")
    return caller


def _name(body: dict, key: str) -> str:
    try:
        return validate_name(body.get(key), key)
    except InvalidName as exc:
        abort(400, str(exc))


def _text(body: dict, key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not 0 < len(value) <= 256:
        abort(400, f"{key} must be a string of 1 to 256 characters")
    return value


@bp.post("/api/enrol/grants")
def new_grant():  # noqa: ANN201
    caller = bearer_caller()
    if caller.kind != "station":
        abort(403, "enrol grants are issued to a station's token, for the admin signed in there")
    body = json_object()
    identity = _name(body, "identity")
    ticket = _text(body, "ticket")
    cfg = services().config
    with services().writer() as db:
        try:
            admin = grants.ticket_admin(db, ticket, caller.name)
        except grants.GrantRefused as exc:
            log.warning("enrol grant for %s at %s refused: %s", who(identity), caller.name, exc.reason)
            return jsonify(ok=False, code=exc.code, error=exc.reason), 403
        grant, row = grants.issue_grant(db, admin, caller.name, identity, cfg.enrol_grant_ttl_s)
    log.info("enrol grant %d: %r may enrol %s at %s until %s", row.id, admin, who(identity), caller.name,
             row.expires_at.isoformat())
    return jsonify(ok=True, grant=grant, expires_at=row.expires_at.isoformat(), admin=admin,
                   station_id=caller.name, identity=identity), 201


@bp.post("/api/enrol/redeem")
def redeem():  # noqa: ANN201
    caller = _service()
    body = json_object()
    station, identity, grant = _name(body, "station_id"), _name(body, "identity"), _text(body, "grant")
    with services().writer() as db:
        try:
            found = grants.redeem_grant(db, grant, station, identity, caller.name)
        except grants.GrantRefused as exc:
            log.warning("enrol grant refused to %s for %s at %s: %s", caller.name, who(identity), station, exc.reason)
            return jsonify(ok=False, code=exc.code, error=exc.reason), 403
    log.info("enrol grant %d redeemed by %s: %r enrols %s at %s", found.grant_id, caller.name, found.admin,
             who(identity), station)
    return jsonify(ok=True, grant_id=found.grant_id, admin=found.admin, issued_at=found.issued_at.isoformat())


@bp.post("/api/enrol/outcome")
def outcome():  # noqa: ANN201
    caller = _service()
    body = json_object()
    grant_id, ok, reason = body.get("grant_id"), body.get("ok"), body.get("reason", "")
    if isinstance(grant_id, bool) or not isinstance(grant_id, int) or not isinstance(ok, bool) or not isinstance(reason, str):
        abort(400, "send {grant_id: int, ok: bool, reason: str}")
    with services().writer() as db:
        if not grants.record_outcome(db, grant_id, caller.name, ok, reason):
            abort(404, f"grant {grant_id} was not redeemed by {caller.name!r} or has its outcome already")
    return jsonify(ok=True)


@bp.post("/api/stations/verify")
def verify_station():  # noqa: ANN201
    caller = _service()
    body = json_object()
    station = _name(body, "station_id")
    credential = body.get("credential")
    if not isinstance(credential, str) or len(credential) > 256:
        abort(400, "credential must be a string of at most 256 characters")
    with services().sessions() as db:
        refusal = grants.verify_station(db, station, credential)
    if refusal is not None:
        services().credential_refusals.warning("station %s claimed via %s with a bad credential: %s", station,
                                               caller.name, refusal)
        return jsonify(ok=False, error=refusal), 403
    return jsonify(ok=True, station_id=station)


MAX_CREDENTIALS = 1024
_HEX = frozenset("0123456789abcdef")


@bp.post("/api/stations/credentials")
def check_credentials():  # noqa: ANN201
    _service()
    items = json_object().get("credentials")
    if not isinstance(items, list) or len(items) > MAX_CREDENTIALS:
        abort(400, f"credentials must be a list of at most {MAX_CREDENTIALS} {{station_id, digest}} objects")
    claims = []
    for item in items:
        if not isinstance(item, dict):
            abort(400, "each credential must be an object {station_id, digest}")
        digest = item.get("digest")
        if not isinstance(digest, str) or len(digest) != 64 or not set(digest) <= _HEX:
            abort(400, "digest must be the 64 lowercase hex digits of the credential's SHA-256")
        claims.append((_name(item, "station_id"), digest))
    with services().sessions() as db:
        valid = station_tokens.valid_station_digests(db, claims)
    return jsonify(ok=True, valid=valid)
