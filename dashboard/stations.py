"""Station status: each report stored (one row per desk), its state told once when it changes, and
`station_offline` incidents opened for desks gone too long and closed when they are back.

Offline incidents have ids derived from the station and the moment it was last in session, so any number of
dashboard processes (or a watcher and a report racing) open and close each one exactly once.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Callable, Optional

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from dashboard import store
from dashboard.models import Alert, ApiToken, StationStatus, utcnow
from dashboard.station_state import StationState, StationThresholds, describe_duration, station_state
from shared.alert_wire import AlertMessage
from shared.station_state import join_codes, split_codes

log = logging.getLogger(__name__)
MAX_ATTEMPTS = 5


@dataclass(frozen=True)
class StatusReport:
    """One validated status body from a recognizer (None: not said)."""

    fps: Optional[float] = None
    recognizer_connected: Optional[bool] = None
    login_name: Optional[str] = None
    faces: Optional[int] = None
    camera: Optional[str] = None  # ok | lost | unknown
    camera_error: Optional[str] = None
    degraded: tuple[str, ...] = ()
    silent_s: Optional[float] = None  # seconds since the recognizer last heard the desk (None: an older recognizer)


HEARD_JITTER_S = 1.0  # a silent desk's "last heard" (now - silent_s) moves only when this much later than the stored
# one: the report's own transit delay (ms, more under load) must not look like a desk heard again, which would close
# its offline alert and move the incident's derived id. A desk heard within this (silent_s below it) moves it freely.


@dataclass(frozen=True)
class StationRules:
    """What the state rules need: the report interval window and the thresholds."""

    report_window_s: float
    th: StationThresholds = StationThresholds()


def state_of(row: Optional[StationStatus], now: dt.datetime, rules: StationRules) -> StationState:
    if row is None:
        return station_state(now=now, last_seen=None, last_connected=None, recognizer_connected=None, fps=None,
                             camera=None, camera_error=None, degraded=(), report_window_s=rules.report_window_s, th=rules.th)
    return station_state(now=now, last_seen=row.last_seen, last_connected=row.last_connected,
                         recognizer_connected=row.recognizer_connected, fps=row.fps, camera=row.camera,
                         camera_error=row.camera_error, degraded=split_codes(row.degraded),
                         report_window_s=rules.report_window_s, th=rules.th)


def record_status(factory: sessionmaker[Session], station_id: str, report: StatusReport, rules: StationRules,
                  publish: Callable[[str, str], None] = lambda _e, _d: None) -> StationState:
    """Upsert the desk's latest status (last_seen = now, last_connected = when the desk was last heard); log its
    state once when it changes; close its open station_offline incident when it is heard again. Returns the new
    state."""
    for _attempt in range(MAX_ATTEMPTS):
        with factory() as db:
            now = utcnow()
            row = db.get(StationStatus, station_id)
            before = state_of(row, now, rules)
            if row is None:
                row = StationStatus(station_id=station_id)
                db.add(row)
            row.last_seen, row.fps, row.recognizer_connected = now, report.fps, report.recognizer_connected
            if report.recognizer_connected or row.login_name is None:  # a desk that left keeps who was there
                row.login_name = report.login_name
            row.faces = report.faces
            row.camera, row.camera_error = report.camera, (report.camera_error or None)
            row.degraded = join_codes(report.degraded) or None
            back_from = None
            if report.recognizer_connected:
                # in session since the desk was last heard (a desk whose cable is pulled stays in session on its
                # recognizer until that recognizer's idle timeout, yet has been gone since its last frame)
                silent_s = report.silent_s or 0.0
                heard = now - dt.timedelta(seconds=silent_s)
                if row.last_connected is None or heard > row.last_connected + dt.timedelta(
                        seconds=0.0 if silent_s < HEARD_JITTER_S else HEARD_JITTER_S):
                    row.last_connected = heard
                    back_from, row.offline_alert_id = row.offline_alert_id, None
            after = state_of(row, now, rules)
            try:
                db.commit()
            except sa.exc.IntegrityError:  # the first report raced another one for the same station
                db.rollback()
                continue
        if before.state != after.state:
            log.info("station %s: %s -> %s (%s)", station_id, before.state, after.state, after.text)
        if back_from is not None:
            _close_offline(factory, station_id, back_from, now, publish)
        return after
    raise RuntimeError(f"could not record status of {station_id}")


def offline_alert_ids(station_id: str, last_connected: dt.datetime) -> tuple[str, str]:
    """(alert id, open event id) of the incident that starts when the desk was last in session."""
    key = hashlib.sha256(f"station_offline\0{station_id}\0{last_connected.isoformat()}".encode()).hexdigest()
    return key[:32], key[32:]


def closed_event_id(alert_id: str) -> str:
    return hashlib.sha256(f"{alert_id}\0closed".encode()).hexdigest()[:32]


def open_offline_alerts(reader: sessionmaker[Session], factory: sessionmaker[Session], rules: StationRules,
                        publish: Callable[[str, str], None] = lambda _e, _d: None,
                        now: Optional[dt.datetime] = None) -> list[str]:
    """Open a station_offline incident for every desk gone longer than the threshold; returns their alert ids.

    The periodic look runs on `reader` (a plain read transaction): on SQLite, holding the write lock of `factory`
    every second would make any other session that reads and then writes fail with 'database is locked' (SQLite
    refuses that upgrade at once rather than wait into a deadlock). Only a claim takes the write lock."""
    now = now or utcnow()
    cutoff = now - dt.timedelta(seconds=rules.th.offline_after_s)
    opened = []
    with reader() as db:
        rows = db.scalars(sa.select(StationStatus).where(
            StationStatus.offline_alert_id.is_(None), StationStatus.last_connected.is_not(None),
            StationStatus.last_connected <= cutoff)).all()
        candidates = [(r.station_id, r.last_connected, r.login_name or "", state_of(r, now, rules)) for r in rows]
    for station_id, last_connected, login, state in candidates:
        if state.state != "offline":
            continue
        alert_id, open_id = offline_alert_ids(station_id, last_connected)
        with factory() as db:  # claim it: only the process whose update lands opens the incident
            claimed = db.execute(sa.update(StationStatus).where(
                StationStatus.station_id == station_id, StationStatus.last_connected == last_connected,
                StationStatus.offline_alert_id.is_(None)).values(offline_alert_id=alert_id)).rowcount
            db.commit()
        if claimed != 1:
            continue
        msg = AlertMessage(
            event_id=open_id, alert_id=alert_id, station_id=station_id, login_name=login, type="station_offline",
            state="open", started_at=last_connected, ended_at=None,
            details={"reason": state.text, "last_in_session": last_connected.isoformat(),
                     "offline_after_s": rules.th.offline_after_s},
        )
        outcome = store.apply_event(factory, msg, None, None)
        log.info("station %s: -> offline (%s); alert %s opened", station_id, state.text, alert_id)
        publish("alert", json.dumps({"alert_id": alert_id, "status": outcome.status}))
        publish("station", json.dumps({"station_id": station_id}))
        opened.append(alert_id)
    return opened


def _close_offline(factory: sessionmaker[Session], station_id: str, alert_id: str, now: dt.datetime,
                   publish: Callable[[str, str], None]) -> None:
    with factory() as db:
        alert = db.get(Alert, alert_id)
        started = alert.started_at if alert is not None else now
        login = alert.login_name if alert is not None else ""
    gone = (now - started).total_seconds()
    msg = AlertMessage(
        event_id=closed_event_id(alert_id), alert_id=alert_id, station_id=station_id, login_name=login, type="station_offline",
        state="closed", started_at=started, ended_at=now, details={"duration_s": round(gone, 1), "closed_by": "station_back"},
    )
    outcome = store.apply_event(factory, msg, None, None)
    log.info("station %s: back after %s; alert %s closed", station_id, describe_duration(gone), alert_id)
    publish("alert", json.dumps({"alert_id": alert_id, "status": outcome.status}))


def list_stations(db: Session, rules: StationRules, now: Optional[dt.datetime] = None) -> list[dict]:
    """Every station that reported or holds a live station token, with its state and the sentence for it."""
    now = now or utcnow()
    status = {s.station_id: s for s in db.scalars(sa.select(StationStatus))}
    names = set(status) | set(db.scalars(sa.select(ApiToken.name).where(ApiToken.kind == "station", ApiToken.revoked_at.is_(None))))
    out = []
    for name in sorted(names):
        s = status.get(name)
        seen = s.last_seen if s else None
        state = state_of(s, now, rules)
        out.append({
            "station_id": name,
            "online": bool(seen and (now - seen).total_seconds() <= rules.report_window_s),
            "state": state.state, "level": state.level, "state_text": state.text,
            "last_seen": seen.isoformat() if seen else None,
            "fps": s.fps if s else None,
            "recognizer_connected": s.recognizer_connected if s else None,
            "login_name": s.login_name if s else None,
            "faces": s.faces if s else None,
            "camera": s.camera if s else None,
            "degraded": list(split_codes(s.degraded)) if s else [],
            "offline_alert_id": s.offline_alert_id if s else None,
        })
    return out
