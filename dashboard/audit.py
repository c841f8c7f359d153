"""The audit: every look at personal data (evidence, exports, a person's page) and every change of the face
library — who, when, what, to whom, from which address — in one append-only log chained by hashes.

Each entry's hash is sha256 over the previous entry's hash and the entry's own canonical JSON (id, time, actor,
action, subject, detail, address), so editing or deleting any entry breaks the link to the next one, and deleting
the newest ones disagrees with the head row. `verify` names the first broken link. `record` adds a row in the
caller's transaction, so a change and its audit are committed together or not at all.
"""
from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import logging
from dataclasses import dataclass
from typing import Iterator, Optional

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from dashboard.audit_models import GENESIS, AuditEntry, AuditHead
from dashboard.models import utcnow

log = logging.getLogger(__name__)
MAX_ATTEMPTS = 5
EXPORT_COLUMNS = ("id", "at", "actor", "action", "subject", "detail", "address", "prev_hash", "hash")
__all__ = ["GENESIS", "ChainReport", "entry_hash", "record", "record_now", "verify", "trim_before", "entries",
           "search", "export_csv"]


@dataclass(frozen=True)
class ChainReport:
    """What `verify` found: `ok`, entries checked, and the first broken entry with the reason (None when ok)."""

    ok: bool
    checked: int
    broken_at: Optional[int] = None
    reason: str = ""

    def as_dict(self) -> dict:
        return {"ok": self.ok, "checked": self.checked, "broken_at": self.broken_at, "reason": self.reason}


def entry_hash(prev_hash: str, entry_id: int, at: dt.datetime, actor: str, action: str, subject: str,
               detail: str, address: str) -> str:
    """The chain's rule: sha256(prev_hash || canonical JSON of the entry), hex."""
    body = json.dumps([entry_id, at.astimezone(dt.timezone.utc).isoformat(timespec="microseconds"), actor, action,
                       subject, detail, address], separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256((prev_hash + body).encode()).hexdigest()


def _head(db: Session) -> AuditHead:
    head = db.scalar(sa.select(AuditHead).where(AuditHead.id == 1).with_for_update())
    if head is None:
        head = AuditHead(id=1, seq=0, last_hash=GENESIS, anchor_id=1, anchor_hash=GENESIS)
        db.add(head)
        db.flush()
    return head


def _request_address() -> str:
    try:
        from flask import has_request_context, request
    except ImportError:  # pragma: no cover - the dashboard always has Flask
        return ""
    return (request.remote_addr or "") if has_request_context() else ""


def record(db: Session, actor: str, action: str, subject: str, detail: str = "", address: Optional[str] = None,
           at: Optional[dt.datetime] = None) -> AuditEntry:
    """Add one entry in `db`'s transaction (the caller commits): takes the head's row lock, chains, moves the head.

    `address` defaults to the current request's remote address (empty outside a request)."""
    at = at or utcnow()  # stored with microseconds on every backend (DATETIME(6) on MySQL), so the hash re-computes
    actor, action, subject, detail = actor[:64], action[:32], subject[:64], detail[:512]
    address = (_request_address() if address is None else address)[:64]
    head = _head(db)
    entry_id = head.seq + 1
    digest = entry_hash(head.last_hash, entry_id, at, actor, action, subject, detail, address)
    row = AuditEntry(id=entry_id, at=at, actor=actor, action=action, subject=subject, detail=detail,
                     address=address, prev_hash=head.last_hash, hash=digest)
    db.add(row)
    head.seq, head.last_hash = entry_id, digest
    db.flush()
    log.info("audit %d: %s %s", entry_id, actor, action)  # whom it was about stays in the audit, not the log
    return row


def record_now(factory: sessionmaker[Session], actor: str, action: str, subject: str, detail: str = "",
               address: Optional[str] = None) -> AuditEntry:
    """Record and commit in a session of its own (a look, which changes nothing else), retried on a collision."""
    for attempt in range(1, MAX_ATTEMPTS + 1):
        with factory() as db:
            try:
                row = record(db, actor, action, subject, detail, address)
                db.commit()
                return row
            except (sa.exc.OperationalError, sa.exc.IntegrityError) as exc:
                db.rollback()
                if attempt == MAX_ATTEMPTS:
                    raise
                log.info("audit append retried after %s", exc.orig)
    raise AssertionError("unreachable")


def verify(db: Session) -> ChainReport:
    """Walk the chain from the anchor to the head; the first entry whose link or hash is wrong is named."""
    head = db.get(AuditHead, 1)
    if head is None:
        n = db.scalar(sa.select(sa.func.count()).select_from(AuditEntry)) or 0
        return ChainReport(n == 0, 0, 1 if n else None, "" if n == 0 else "entries exist but the head row is gone")
    expected_id, expected_prev, checked = head.anchor_id, head.anchor_hash, 0
    for e in db.scalars(sa.select(AuditEntry).where(AuditEntry.id >= head.anchor_id).order_by(AuditEntry.id)
                        .execution_options(yield_per=1000)):
        if e.id != expected_id:
            return ChainReport(False, checked, expected_id, f"entry {expected_id} is missing (next is {e.id})")
        if e.prev_hash != expected_prev:
            return ChainReport(False, checked, e.id, "its link to the entry before does not match (edited or removed)")
        if entry_hash(e.prev_hash, e.id, e.at, e.actor, e.action, e.subject, e.detail, e.address) != e.hash:
            return ChainReport(False, checked, e.id, "its contents do not match its hash (edited)")
        expected_id, expected_prev, checked = e.id + 1, e.hash, checked + 1
    if expected_id - 1 != head.seq or expected_prev != head.last_hash:
        return ChainReport(False, checked, expected_id, f"entries {expected_id}..{head.seq} are missing (removed)")
    return ChainReport(True, checked)


def trim_before(db: Session, cutoff: dt.datetime) -> int:
    """Retention: delete entries older than `cutoff` and move the anchor to the first kept one (caller commits)."""
    head = _head(db)
    last_old = db.scalar(sa.select(sa.func.max(AuditEntry.id)).where(AuditEntry.at < cutoff))
    if last_old is None:
        return 0
    prev = db.scalar(sa.select(AuditEntry.hash).where(AuditEntry.id == last_old))
    n = db.execute(sa.delete(AuditEntry).where(AuditEntry.id <= last_old)).rowcount or 0
    head.anchor_id, head.anchor_hash = last_old + 1, prev
    return n


def entries(db: Session, subject: str | None = None, limit: int = 50) -> list[AuditEntry]:
    """The newest audit rows, of one subject when given."""
    q = sa.select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
    if subject is not None:
        q = q.where(AuditEntry.subject == subject)
    return list(db.scalars(q))


def search(db: Session, limit: int = 200, offset: int = 0, actor: str = "", action: str = "") -> list[AuditEntry]:
    """Newest first, optionally one actor's or one action's."""
    q = sa.select(AuditEntry).order_by(AuditEntry.id.desc())
    if actor:
        q = q.where(AuditEntry.actor == actor)
    if action:
        q = q.where(AuditEntry.action == action)
    return list(db.scalars(q.limit(limit).offset(offset)))


def actions(db: Session) -> list[str]:
    """The actions recorded so far (for the page's filter)."""
    return list(db.scalars(sa.select(AuditEntry.action).distinct().order_by(AuditEntry.action)))


def export_csv(db: Session) -> Iterator[str]:
    """The whole log, oldest first, with its hashes (so a copy can be verified elsewhere), as CSV chunks."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(EXPORT_COLUMNS)
    for e in db.scalars(sa.select(AuditEntry).order_by(AuditEntry.id).execution_options(yield_per=1000)):
        writer.writerow([e.id, e.at.isoformat(timespec="microseconds"), e.actor, e.action, e.subject, e.detail,
                         e.address, e.prev_hash, e.hash])
        if buf.tell() > 64 * 1024:
            yield buf.getvalue()
            buf.seek(0)
            buf.truncate()
    yield buf.getvalue()
