"""Retention: each kind of personal data is deleted when its time is up, by the running dashboard.

`apply` is one pass (pure database work, returns counts); `start` runs it in a thread of the server every
`retention_interval_s`, and compacts the database every `vacuum_interval_s` so deleted pages do not linger in the
file (SQLite also overwrites them at once: `PRAGMA secure_delete = ON`, set by dashboard.db). A kind whose
period is 0 is kept forever. What was removed is logged as counts, never as names.
"""
from __future__ import annotations

import datetime as dt
import logging
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Optional

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from dashboard import audit
from dashboard.models import Alert, AlertEvent, Evidence, SignInFailure, utcnow

log = logging.getLogger(__name__)
BATCH = 500  # rows per delete, so a long backlog never holds the write lock for long


@dataclass(frozen=True)
class RetentionPolicy:
    """Days each kind is kept (0: forever)."""

    evidence_days: float = 30
    alerts_days: float = 180
    review_days: float = 30
    sign_in_failures_days: float = 90
    audit_days: float = 730

    @classmethod
    def from_config(cls, config) -> "RetentionPolicy":  # noqa: ANN001 - DashboardConfig
        return cls(config.retention_evidence_days, config.retention_alerts_days, config.retention_review_days,
                   config.retention_sign_in_failures_days, config.retention_audit_days)


def _cutoff(now: dt.datetime, days: float) -> Optional[dt.datetime]:
    return now - dt.timedelta(days=days) if days > 0 else None


def _delete_batched(factory: sessionmaker[Session], table, key, where) -> int:  # noqa: ANN001
    """Delete rows of `table` matching `where`, BATCH at a time, each batch its own short transaction."""
    total = 0
    while True:
        with factory() as db:
            keys = list(db.scalars(sa.select(key).where(where).limit(BATCH)))
            if not keys:
                return total
            total += db.execute(sa.delete(table).where(key.in_(keys))).rowcount or 0
            db.commit()


def apply(factory: sessionmaker[Session], policy: RetentionPolicy, now: Optional[dt.datetime] = None) -> dict[str, int]:
    """One pass over every kind; returns rows deleted per kind (evidence images, alerts, review faces, ...)."""
    now = now or utcnow()
    counts: dict[str, int] = {}
    if (cut := _cutoff(now, policy.evidence_days)) is not None:
        old = sa.select(Alert.alert_id).where(Alert.started_at < cut).scalar_subquery()
        counts["evidence"] = _delete_batched(factory, Evidence, Evidence.alert_id, Evidence.alert_id.in_(old))
        with factory() as db:
            db.execute(sa.update(Alert).where(Alert.started_at < cut, Alert.evidence_purged_at.is_(None))
                       .values(evidence_purged_at=now))
            db.commit()
    if (cut := _cutoff(now, policy.alerts_days)) is not None:
        old = sa.select(Alert.alert_id).where(Alert.started_at < cut).scalar_subquery()
        counts["evidence"] = counts.get("evidence", 0) + _delete_batched(
            factory, Evidence, Evidence.alert_id, Evidence.alert_id.in_(old))
        counts["alert_events"] = _delete_batched(factory, AlertEvent, AlertEvent.event_id, AlertEvent.alert_id.in_(old))
        counts["alerts"] = _delete_batched(factory, Alert, Alert.alert_id, Alert.started_at < cut)
    if (cut := _cutoff(now, policy.review_days)) is not None:
        from dashboard.library_models import ReviewFace

        counts["review_faces"] = _delete_batched(factory, ReviewFace, ReviewFace.id, ReviewFace.seen_at < cut)
    if (cut := _cutoff(now, policy.sign_in_failures_days)) is not None:
        counts["sign_in_failures"] = _delete_batched(factory, SignInFailure, SignInFailure.id, SignInFailure.at < cut)
    if (cut := _cutoff(now, policy.audit_days)) is not None:
        with factory() as db:
            n = audit.trim_before(db, cut)
            if n:
                audit.record(db, "retention", "retention.audit", "audit", f"{n} entries older than "
                             f"{policy.audit_days:g} days removed", address="")
            db.commit()
        counts["audit"] = n
    return counts


def compact(engine: Engine) -> str:
    """Give deleted pages back and overwrite them: VACUUM (SQLite, PostgreSQL) or OPTIMIZE TABLE (MariaDB)."""
    backend = engine.url.get_backend_name()
    if backend == "sqlite":
        if engine.url.database in (None, "", ":memory:"):
            return "nothing to compact"
        raw = engine.raw_connection()  # outside SQLAlchemy's BEGIN: VACUUM cannot run in a transaction
        try:
            cur = raw.cursor()
            cur.execute("VACUUM")
            cur.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the WAL held copies of the old pages too
            cur.close()
        finally:
            raw.close()
        return "VACUUM"
    if backend == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM")
        return "VACUUM"
    if backend in ("mysql", "mariadb"):
        with engine.connect() as conn:
            for table in ("evidence", "alerts", "alert_events", "review_faces", "review_crops", "gallery_encodings",
                          "audit_log"):
                conn.exec_driver_sql(f"OPTIMIZE TABLE {table}").fetchall()
        return "OPTIMIZE TABLE"
    return "nothing to compact"


def run_once(svc, compact_now: bool) -> dict[str, int]:  # noqa: ANN001 - dashboard.services.Services
    """One scheduled pass: apply the policy, log the counts, compact when it is time."""
    counts = apply(svc.writer, RetentionPolicy.from_config(svc.config))
    removed = {k: v for k, v in counts.items() if v}
    if removed:
        log.info("retention removed %s", ", ".join(f"{v} {k}" for k, v in removed.items()))
    if compact_now:
        t0 = time.monotonic()
        how = compact(svc.engine)
        log.info("retention: database compacted (%s) in %.1f s", how, time.monotonic() - t0)
    return counts


def start(svc) -> Optional[threading.Thread]:  # noqa: ANN001 - dashboard.services.Services
    """Start the retention thread for `svc` (None when retention_interval_s is 0); it ends with the broker."""
    if not svc.config.retention_interval_s:
        return None
    thread = threading.Thread(target=_run, args=(weakref.ref(svc), svc.broker.closed, svc.config.retention_interval_s,
                                                 svc.config.vacuum_interval_s), name="retention", daemon=True)
    thread.start()
    return thread


def _run(ref: "weakref.ref", closed: threading.Event, interval_s: float, vacuum_s: float) -> None:
    last_vacuum = time.monotonic()
    wait = min(60.0, interval_s)  # a first pass soon after start (a dashboard restarted often still runs it)
    while not closed.wait(wait):
        wait = interval_s
        svc = ref()
        if svc is None:
            return
        due = bool(vacuum_s) and time.monotonic() - last_vacuum >= vacuum_s
        try:
            run_once(svc, due)
            if due:
                last_vacuum = time.monotonic()
        except Exception as exc:  # noqa: BLE001 - a database hiccup must not end retention
            log.warning("retention pass failed (%s: %s); next try in %.0f s", type(exc).__name__, exc, interval_s)
        del svc
