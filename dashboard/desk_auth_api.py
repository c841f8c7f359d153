"""Desk sign-in endpoints for edges: credential checks, failure reports, rate limits, `failed_sign_in` alerts.

An edge (a station token) asks `POST /api/auth/check` whether a username and password are right and
learns the account's role and enrolled identity; it reports failed face checks to
`POST /api/auth/failure`. Failures (wrong password or failed face check) are counted per station and
per account in the database; the failure that brings either count to `sign_in_max_failures` within
`sign_in_window_s` raises a `failed_sign_in` alert with the evidence frame the edge sent
(`dashboard.sign_in_failures`). Checks are slowed, never locked: past `sign_in_max_failures` failures
of one account *at one desk*, that pair waits 5 s, 10 s, 20 s ... (at most 120 s, `shared.throttle`)
before its next check, answered 429 with Retry-After. The same account at another desk, and other
accounts at that desk, are not slowed, so a guesser cannot lock the real evaluator, or an admin, out.
Each check is registered in memory before its password is hashed (`shared.throttle.InFlight`), so checks sent at once
are held to the same count as checks sent one by one; the hash itself runs in the bounded
`accounts.PasswordChecks` pool (429 `busy` when it is full).
"""
from __future__ import annotations

import base64
import binascii
import datetime as dt
import logging
from typing import Optional

from flask import Blueprint, abort, jsonify

from dashboard import grants
from dashboard.accounts import ChecksBusy, check_login
from dashboard.api_requests import bearer_caller, json_object
from dashboard.images import BadImage, check_jpeg
from dashboard.models import utcnow
from dashboard.services import services
from dashboard.sign_in_failures import FAILURE_REASONS, failure_counts, record_failure
from dashboard.station_tokens import Caller
from shared.names import InvalidName, validate_name
from shared.throttle import TooManyFailures

log = logging.getLogger(__name__)
bp = Blueprint("desk_auth_api", __name__)


def _station(caller: Caller, body: dict) -> str:
    """The station a request is for: the token's own, or `station_id` for a service token."""
    station = caller.name if caller.kind == "station" else body.get("station_id")
    try:
        return validate_name(station, "station_id")
    except InvalidName as exc:
        abort(400, str(exc))


def _username(body: dict) -> str:
    username = body.get("username")
    if not isinstance(username, str) or not username.strip() or len(username) > 64:
        abort(400, "username must be a string of 1 to 64 characters")
    return username.strip()


def _image(body: dict) -> Optional[bytes]:
    raw = body.get("image")
    if raw in (None, ""):
        return None
    try:
        data = base64.b64decode(raw, validate=True)
        check_jpeg(data, "image")
    except (binascii.Error, TypeError, ValueError, BadImage) as exc:
        abort(400, f"image must be a base64 JPEG: {exc}")
    return data


def _too_many(wait_s: float):  # noqa: ANN202
    retry = int(wait_s) + 1
    response = jsonify(ok=False, reason="too_many_failures",
                       message=f"too many failed sign-ins for this account at this desk; try again in {retry} s")
    response.headers["Retry-After"] = str(retry)
    return response, 429


def _desk_request() -> tuple[dict, str, str]:
    """The authenticated desk's request: (JSON body, station id, user name), or abort with the reason."""
    caller = bearer_caller()
    body = json_object()
    return body, _station(caller, body), _username(body)


@bp.post("/api/auth/check")
def check():  # noqa: ANN201
    """{username, password, image?} -> 200 {ok, username, role, identity, enrol_ticket (admins)} | 401 | 429."""
    body, station, username = _desk_request()
    password = body.get("password")
    if not isinstance(password, str):
        abort(400, "password must be a string")
    svc = services()
    alert_id = None
    try:
        # registered before the failures are read and the hash computed, and ended only once this check's failure
        # is stored: checks sent at once count each other (shared.throttle.InFlight)
        with svc.desk_checks.begin(f"{station}|{username}") as ticket:
            with svc.sessions() as db:
                now = utcnow()
                counts = failure_counts(db, station, username, now - dt.timedelta(seconds=svc.config.sign_in_window_s))
                ticket.check(counts.pair, None if counts.pair_last is None else (now - counts.pair_last).total_seconds())
                user = check_login(db, username, password, svc.password_checks)
                found = None if user is None else {"username": user.username, "role": user.role, "identity": user.identity}
            if found is None:
                alert_id = record_failure(station, username, "wrong_password", _image(body))
    except TooManyFailures as exc:
        svc.refusals.warning("sign-in for %r at %s refused: too many failures, %d s to wait", username, station,
                             exc.retry_after)
        return _too_many(exc.wait_s)
    except ChecksBusy as exc:
        svc.refusals.warning("sign-in for %r at %s refused: password checks busy", username, station)
        response = jsonify(ok=False, reason="busy", message="the dashboard is busy checking other sign-ins; try again")
        response.headers["Retry-After"] = str(exc.retry_after)
        return response, 429
    if found is None:
        return jsonify(ok=False, reason="wrong_password", message="wrong user name or password",
                       alert_id=alert_id), 401
    if found["role"] == "viewer":
        return jsonify(ok=False, reason="no_desk_role", message="this account may not sign in at a desk"), 403
    log.info("password accepted for %r (%s) at %s", found["username"], found["role"], station)
    if found["role"] == "admin":  # the admin's right to ask for enrol grants at this desk (docs/trust.md)
        with svc.writer() as db:
            found["enrol_ticket"] = grants.issue_ticket(db, found["username"], station, svc.config.enrol_ticket_ttl_s)
    return jsonify(ok=True, **found)


@bp.post("/api/auth/failure")
def failure():  # noqa: ANN201
    """{username, reason, image?}: a failed face check at a desk; counts toward the limit (station token)."""
    body, station, username = _desk_request()
    reason = body.get("reason")
    if reason not in FAILURE_REASONS:
        abort(400, f"reason must be one of {', '.join(FAILURE_REASONS)}")
    alert_id = record_failure(station, username, reason, _image(body))
    return jsonify(recorded=True, alert_id=alert_id), 201
