"""Alert storage rules: idempotent, order-independent merging of events into incidents; queries; retention."""
from __future__ import annotations

import datetime as dt
import json
import logging
import time
from dataclasses import dataclass
from typing import Optional

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from dashboard import images
from dashboard.models import Alert, AlertEvent, Evidence, utcnow
from shared.alert_wire import AlertMessage

log = logging.getLogger(__name__)
MAX_ATTEMPTS = 5


class Conflict(ValueError):
    """An event that contradicts stored data (an alert id reused by another station)."""


@dataclass(frozen=True)
class Outcome:
    status: str  # "created", "updated" or "duplicate"
    alert_id: str


def apply_event(
    factory: sessionmaker[Session], msg: AlertMessage, image: Optional[bytes], best: Optional[bytes]
) -> Outcome:
    """Store one delivered event exactly once; retries when a concurrent delivery raced us.

    Merge rules (any arrival order gives the same incident): `open` is authoritative for the opening
    image and start; `update`/`closed` replace the best image and add details; `closed` sets ended_at,
    and a late `open` never re-opens it.
    """
    thumb = images.thumbnail(image) if image else None
    for attempt in range(1, MAX_ATTEMPTS + 1):
        with factory() as db:
            try:
                outcome = _apply_once(db, msg, image, best, thumb)
                db.commit()
                return outcome
            except sa.exc.IntegrityError:
                db.rollback()
            except sa.exc.OperationalError as exc:  # deadlock / lock wait on MySQL, busy on SQLite
                db.rollback()
                if attempt == MAX_ATTEMPTS:
                    raise
                log.info("retrying event %s after %s", msg.event_id, exc.orig)
                time.sleep(0.01 * attempt)
                continue
        with factory() as db:
            if db.get(AlertEvent, msg.event_id) is not None:
                return Outcome("duplicate", msg.alert_id)
        time.sleep(0.005 * attempt)  # another event of the same alert created the row first: merge into it
    raise RuntimeError(f"could not store event {msg.event_id} after {MAX_ATTEMPTS} attempts")


def _apply_once(db: Session, msg: AlertMessage, image, best, thumb) -> Outcome:  # noqa: ANN001
    now = utcnow()
    if db.get(AlertEvent, msg.event_id) is not None:
        return Outcome("duplicate", msg.alert_id)
    db.add(AlertEvent(event_id=msg.event_id, alert_id=msg.alert_id, state=msg.state, received_at=now))
    db.flush()  # the primary key makes a concurrent duplicate fail here or at commit
    alert = db.scalar(sa.select(Alert).where(Alert.alert_id == msg.alert_id).with_for_update())
    created = alert is None
    if created:
        alert = Alert(
            alert_id=msg.alert_id, station_id=msg.station_id, login_name=msg.login_name, type=msg.type,
            started_at=msg.started_at, details="{}", opened_seen=False, received_at=now,
        )
        db.add(alert)
    elif alert.station_id != msg.station_id:
        raise Conflict(f"alert_id {msg.alert_id} belongs to another station")
    old = json.loads(alert.details or "{}")
    if msg.state == "closed" and alert.ended_at is not None and "closed_by" in old:
        # closed already (e.g. by the dashboard when the station moved to another node): the first close and its
        # reason stand; a later one (the old node's outbox at its restart) only adds what it knew
        alert.details = json.dumps({**msg.details, **old})
        alert.updated_at = now
        return Outcome("updated", msg.alert_id)
    if msg.state == "open":
        alert.started_at, alert.type, alert.login_name = msg.started_at, msg.type, msg.login_name
        alert.opened_seen = True
        alert.details = json.dumps({**msg.details, **old})
    else:
        alert.details = json.dumps({**old, **msg.details})
    if msg.state == "closed":
        alert.ended_at = msg.ended_at or now
    elif msg.ended_at is not None and alert.ended_at is None:
        alert.ended_at = msg.ended_at
    alert.updated_at = now
    db.flush()
    have = set(db.scalars(sa.select(Evidence.kind).where(Evidence.alert_id == msg.alert_id)))
    if image is not None and (msg.state == "open" or "image" not in have):
        _put_evidence(db, msg.alert_id, "image", image, now, "image" in have)
        _put_evidence(db, msg.alert_id, "thumb", thumb, now, "thumb" in have)
    if best is not None and (msg.state != "open" or "best" not in have):
        _put_evidence(db, msg.alert_id, "best", best, now, "best" in have)
    return Outcome("created" if created else "updated", msg.alert_id)


def _put_evidence(db: Session, alert_id: str, kind: str, data: bytes, now: dt.datetime, exists: bool) -> None:
    if exists:
        db.execute(sa.update(Evidence).where(Evidence.alert_id == alert_id, Evidence.kind == kind).values(data=data, created_at=now))
    else:
        db.add(Evidence(alert_id=alert_id, kind=kind, data=data, created_at=now))


@dataclass(frozen=True)
class AlertFilter:
    station: Optional[str] = None
    login_name: Optional[str] = None
    type: Optional[str] = None
    state: Optional[str] = None  # open, closed, acknowledged, unacknowledged
    date_from: Optional[dt.datetime] = None
    date_to: Optional[dt.datetime] = None  # exclusive
    alert_id: Optional[str] = None

    def where(self) -> list:
        conds: list = []
        if self.station:
            conds.append(Alert.station_id == self.station)
        if self.login_name:
            conds.append(Alert.login_name == self.login_name)
        if self.type:
            conds.append(Alert.type == self.type)
        if self.state == "open":
            conds += [Alert.ended_at.is_(None), Alert.acknowledged_at.is_(None)]
        elif self.state == "closed":
            conds += [Alert.ended_at.is_not(None), Alert.acknowledged_at.is_(None)]
        elif self.state == "acknowledged":
            conds.append(Alert.acknowledged_at.is_not(None))
        elif self.state == "unacknowledged":
            conds.append(Alert.acknowledged_at.is_(None))
        if self.date_from:
            conds.append(Alert.started_at >= self.date_from)
        if self.date_to:
            conds.append(Alert.started_at < self.date_to)
        if self.alert_id:
            conds.append(Alert.alert_id == self.alert_id)
        return conds


FILTER_STATES = ("open", "closed", "acknowledged", "unacknowledged")


def list_alerts(db: Session, flt: AlertFilter, page: int = 1, per_page: int = 50) -> tuple[list[Alert], int]:
    """Newest first (by start time); returns (page of alerts, total matching)."""
    conds = flt.where()
    total = db.scalar(sa.select(sa.func.count()).select_from(Alert).where(*conds)) or 0
    rows = db.scalars(
        sa.select(Alert).where(*conds).order_by(Alert.started_at.desc(), Alert.alert_id.desc())
        .offset((page - 1) * per_page).limit(per_page)
    ).all()
    return list(rows), total


def iter_alerts(db: Session, flt: AlertFilter, batch: int = 500):  # noqa: ANN201 - generator of Alert
    """Every matching alert, newest first, fetched in batches (for CSV export)."""
    stmt = sa.select(Alert).where(*flt.where()).order_by(Alert.started_at.desc(), Alert.alert_id.desc())
    offset = 0
    while True:
        rows = db.scalars(stmt.offset(offset).limit(batch)).all()
        yield from rows
        if len(rows) < batch:
            return
        offset += batch


def evidence_kinds(db: Session, alert_ids: list[str]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {a: set() for a in alert_ids}
    if alert_ids:
        for aid, kind in db.execute(sa.select(Evidence.alert_id, Evidence.kind).where(Evidence.alert_id.in_(alert_ids))):
            out[aid].add(kind)
    return out


def get_evidence(db: Session, alert_id: str, kind: str) -> Optional[bytes]:
    return db.scalar(sa.select(Evidence.data).where(Evidence.alert_id == alert_id, Evidence.kind == kind))


def alert_to_dict(alert: Alert, kinds: set[str]) -> dict:
    def iso(t: Optional[dt.datetime]) -> Optional[str]:
        return None if t is None else t.isoformat()

    base = f"/api/alerts/{alert.alert_id}"
    return {
        "alert_id": alert.alert_id, "station_id": alert.station_id, "login_name": alert.login_name,
        "type": alert.type, "state": alert.state, "started_at": iso(alert.started_at), "ended_at": iso(alert.ended_at),
        "details": json.loads(alert.details or "{}"), "received_at": iso(alert.received_at), "updated_at": iso(alert.updated_at),
        "acknowledged_at": iso(alert.acknowledged_at), "acknowledged_by": alert.acknowledged_by, "ack_comment": alert.ack_comment,
        "evidence_purged_at": iso(alert.evidence_purged_at),
        "image_url": f"{base}/image" if "image" in kinds else None,
        "best_image_url": f"{base}/best_image" if "best" in kinds else None,
        "thumb_url": f"{base}/thumb" if "thumb" in kinds else None,
    }


def acknowledge(db: Session, alert_id: str, username: str, comment: str) -> Optional[Alert]:
    alert = db.get(Alert, alert_id)
    if alert is None:
        return None
    alert.acknowledged_at, alert.acknowledged_by, alert.ack_comment = utcnow(), username, comment.strip()[:2000]
    db.commit()
    return alert


def purge_evidence(db: Session, older_than_days: float, now: Optional[dt.datetime] = None) -> int:
    """Delete the images of alerts that started more than N days ago; the alert rows stay. Returns images deleted."""
    now = now or utcnow()
    cutoff = now - dt.timedelta(days=older_than_days)
    old = sa.select(Alert.alert_id).where(Alert.started_at < cutoff)
    deleted = db.execute(sa.delete(Evidence).where(Evidence.alert_id.in_(old))).rowcount or 0
    db.execute(sa.update(Alert).where(Alert.started_at < cutoff, Alert.evidence_purged_at.is_(None)).values(evidence_purged_at=now))
    db.commit()
    return deleted
