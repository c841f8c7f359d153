"""Failed desk sign-ins: stored per station and account, counted over the window, and the failure that brings a
count to `sign_in_max_failures` raises a `failed_sign_in` alert (with the evidence frame the edge sent)."""
from __future__ import annotations

import datetime as dt
import json
import logging
import uuid
from dataclasses import dataclass
from typing import Optional

import sqlalchemy as sa
from sqlalchemy.orm import Session

from dashboard import store
from dashboard.models import SignInFailure, utcnow
from dashboard.services import services
from shared.alert_wire import AlertMessage
from shared.names import InvalidName, validate_name
from shared.signin import FAILURE_REASONS as SIGNIN_REASONS

log = logging.getLogger(__name__)

FAILURE_REASONS = SIGNIN_REASONS  # every code the edge or the recognizer can give (shared.signin): none is refused


@dataclass(frozen=True)
class FailureCounts:
    station: int
    account: int
    pair: int  # of this account at this station
    pair_last: Optional[dt.datetime]  # the latest failure of the pair


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


def record_failure(station: str, username: str, reason: str, image: Optional[bytes]) -> Optional[str]:
    """Store one failure; when it brings a count to the limit, raise a failed_sign_in alert. Returns its id."""
    cfg = services().config
    now = utcnow()
    since = now - dt.timedelta(seconds=cfg.sign_in_window_s)
    with services().writer() as db:
        db.add(SignInFailure(station_id=station, username=username[:64], reason=reason, at=now))
        db.commit()
        counts = failure_counts(db, station, username, since)
    services().refusals.warning("failed sign-in at %s for %r (%s): %d at this desk, %d for the account in %.0f s",
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
