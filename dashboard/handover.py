"""A station moved to another recognizer node: close the incidents its old session left open, with the reason.

Each node's status report names the station's session (`node`, `session`, `connected_at`). When a station shows
up in a new session, every incident of that station still open that started before the new session began is
closed now with `closed_by: station_moved` and where it moved from and to: a node killed outright cannot close
them itself (its outbox does at its next start, if it comes back), and the new node opens its own incidents if
the condition is still there. Assumes the nodes' clocks agree (NTP), as the incident times already do.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
from typing import Optional

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker

from dashboard.models import Alert, Base, UTCDateTime, utcnow

log = logging.getLogger(__name__)


class StationSession(Base):
    """The recognizer session a station is in now: which node, since when."""

    __tablename__ = "station_sessions"
    station_id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    node: Mapped[str] = mapped_column(sa.String(128))
    session: Mapped[str] = mapped_column(sa.String(160))
    since: Mapped[dt.datetime] = mapped_column(UTCDateTime())


def record_session(factory: sessionmaker[Session], station_id: str, node: str, session: str,
                   since: dt.datetime) -> list[str]:
    """Note the station's current session; on a new one, close the older open incidents. Returns their alert ids."""
    for _attempt in range(5):
        with factory() as db:
            row = db.get(StationSession, station_id)
            if row is not None and row.session == session:
                return []
            previous: Optional[str] = row.node if row is not None else None
            if row is None:
                row = StationSession(station_id=station_id, node=node, session=session, since=since)
                db.add(row)
            else:
                row.node, row.session, row.since = node, session, since
            closed = _close_before(db, station_id, since, previous, node)
            try:
                db.commit()
            except sa.exc.IntegrityError:  # the first report raced another for the same station
                db.rollback()
                continue
        if closed:
            log.info("station %s moved %s-> %s: closed %d incident(s) of its old session", station_id,
                     f"from {previous} " if previous else "", node, len(closed))
        return closed
    raise RuntimeError(f"could not record the session of {station_id}")


def _close_before(db: Session, station_id: str, since: dt.datetime, old_node: Optional[str], new_node: str) -> list[str]:
    now = utcnow()
    open_ = db.scalars(sa.select(Alert).where(Alert.station_id == station_id, Alert.ended_at.is_(None),
                                              Alert.started_at < since,
                                              Alert.type != "station_offline"))  # the dashboard's own: closed when back
    closed = []
    for alert in open_:
        details = json.loads(alert.details or "{}")
        details.update(closed_by="station_moved", moved_from=old_node or "an earlier session", moved_to=new_node)
        alert.details, alert.ended_at, alert.updated_at = json.dumps(details), min(since, now), now
        closed.append(alert.alert_id)
    return closed
