"""Desk sign-in service for edges: credential checks, failure reports, rate limits, `failed_sign_in` alerts.

An edge (a station token) asks `POST /api/auth/check` whether a username and password are right and
learns the account's role and enrolled identity; it reports failed face checks to
`POST /api/auth/failure`. Failures (wrong password or failed face check) are counted per station and
per account in the database; the failure that brings either count to `sign_in_max_failures` within
`sign_in_window_s` raises a `failed_sign_in` alert with the evidence frame the edge sent. Checks are
slowed, never locked: past `sign_in_max_failures` failures of one account *at one desk*, that pair
waits 5 s, 10 s, 20 s ... (at most 120 s, `shared.throttle`) before its next check, answered 429 with
Retry-After. The same account at another desk, and other accounts at that desk, are not slowed, so a
guesser cannot lock the real evaluator, or an admin, out.
"""
from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import logging
import uuid
from dataclasses import dataclass
from typing import Optional

import sqlalchemy as sa
from flask import Blueprint, abort, jsonify, request
from sqlalchemy.orm import Session

from dashboard import grants, store
from dashboard.app import services
from dashboard.api import _caller
from dashboard.auth import Caller, check_login
from dashboard.images import BadImage, check_jpeg
from dashboard.ingest import AlertMessage
from dashboard.models import SignInFailure, utcnow
from shared.names import InvalidName, validate_name
from shared.throttle import delay_after

log = logging.getLogger(__name__)
bp = Blueprint("auth_api", __name__)

FAILURE_REASONS = ("wrong_password", "no_face", "several_faces", "not_account_holder", "no_blink", "timed_out",
                   "not_enrolled", "offline")


@dataclass(frozen=True)
class FailureCounts:
    station: int
    account: int
    pair: int  # of this account at this station
    pair_last: Optional[dt.datetime]  # the latest failure of the pair

    def wait_s(self, free: int, now: dt.datetime) -> float:
        """Seconds this account must wait at this station before its next check (0: now)."""
        if self.pair_last is None:
            return 0.0
        return max(0.0, delay_after(self.pair, free) - (now - self.pair_last).total_seconds())


def failure_counts(db: Session, station_id: str, username: str, since: dt.datetime) -> FailureCounts:
    recent = sa.select(SignInFailure).where(SignInFailure.at >= since)
    by_station = recent.where(SignInFailure.station_id == station_id).subquery()
    by_account = recent.where(SignInFailure.username == username).subquery()
    station = db.scalar(sa.select(sa.func.count()).select_from(by_station)) or 0
    account = db.scalar(sa.select(sa.func.count()).select_from(by_account)) or 0
    pair, last = db.execute(sa.select(sa.func.count(), sa.func.max(SignInFailure.at)).where(
        SignInFailure.at >= since, SignInFailure.station_id == station_id, SignInFailure.username == username)).one()
    if last is not None and last.tzinfo is None:  # an aggregate skips the column type on some backends
        last = last.replace(tzinfo=dt.timezone.utc)
    return FailureCounts(station, account, pair or 0, last)


def _body() -> dict:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        abort(400, "send a JSON object")
    return body


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


def record_failure(station: str, username: str, reason: str, image: Optional[bytes]) -> Optional[str]:
    """Store one failure; when it brings a count to the limit, raise a failed_sign_in alert. Returns its id."""
    cfg = services().config
    now = utcnow()
    since = now - dt.timedelta(seconds=cfg.sign_in_window_s)
    with services().writer() as db:
        db.add(SignInFailure(station_id=station, username=username[:64], reason=reason, at=now))
        db.commit()
        counts = failure_counts(db, station, username, since)
    log.warning("failed sign-in at %s for %r (%s): %d at this desk, %d for the account in %.0f s",
                station, username, reason, counts.station, counts.account, cfg.sign_in_window_s)
    limit = cfg.sign_in_max_failures
    if counts.station != limit and counts.account != limit:
        return None
    try:
        login = validate_name(username, "login")
    except InvalidName:
        login = ""
    msg = AlertMessage(
        event_id=uuid.uuid4().hex, alert_id=uuid.uuid4().hex, station_id=station, login_name=login,
        type="failed_sign_in", state="open", started_at=now, ended_at=now,
        details={"username": username[:64], "last_reason": reason, "failures_at_station": counts.station,
                 "failures_for_account": counts.account, "window_s": cfg.sign_in_window_s},
    )
    outcome = store.apply_event(services().writer, msg, image, None)
    services().broker.publish("alert", json.dumps({"alert_id": outcome.alert_id, "status": outcome.status}))
    log.warning("failed_sign_in alert %s raised at %s for %r", outcome.alert_id, station, username)
    return outcome.alert_id


def _desk_request() -> tuple[dict, str, str]:
    """The authenticated desk's request: (JSON body, station id, user name), or abort with the reason."""
    caller = _caller()
    body = _body()
    return body, _station(caller, body), _username(body)


@bp.post("/api/auth/check")
def check():  # noqa: ANN201
    """{username, password, image?} -> 200 {ok, username, role, identity, enrol_ticket (admins)} | 401 | 429."""
    body, station, username = _desk_request()
    password = body.get("password")
    if not isinstance(password, str):
        abort(400, "password must be a string")
    now = utcnow()
    with services().sessions() as db:
        counts = failure_counts(db, station, username, now - dt.timedelta(seconds=services().config.sign_in_window_s))
        wait = counts.wait_s(services().config.sign_in_max_failures, now)
        if wait:
            log.warning("sign-in for %r at %s refused: too many failures, %.0f s to wait", username, station, wait)
            return _too_many(wait)
        user = check_login(db, username, password)
        found = None if user is None else {"username": user.username, "role": user.role, "identity": user.identity}
    if found is None:
        alert_id = record_failure(station, username, "wrong_password", _image(body))
        return jsonify(ok=False, reason="wrong_password", message="wrong user name or password",
                       alert_id=alert_id), 401
    if found["role"] == "viewer":
        return jsonify(ok=False, reason="no_desk_role", message="this account may not sign in at a desk"), 403
    log.info("password accepted for %r (%s) at %s", found["username"], found["role"], station)
    if found["role"] == "admin":  # the admin's right to ask for enrol grants at this desk (docs/trust.md)
        with services().writer() as db:
            found["enrol_ticket"] = grants.issue_ticket(db, found["username"], station,
                                                        services().config.enrol_ticket_ttl_s)
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
