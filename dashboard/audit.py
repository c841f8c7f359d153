"""The audit log: who changed what on the dashboard's pages, and when (the face library's changes).

`record` adds a row in the caller's transaction, so a change and its audit are committed together or not at all.
"""
from __future__ import annotations

import logging

import sqlalchemy as sa
from sqlalchemy.orm import Session

from dashboard.library_models import AuditEntry
from dashboard.models import utcnow

log = logging.getLogger(__name__)


def record(db: Session, actor: str, action: str, subject: str, detail: str = "") -> AuditEntry:
    """Add one audit row (committed with the caller's transaction) and say it in the log."""
    row = AuditEntry(at=utcnow(), actor=actor[:64], action=action[:32], subject=subject[:64], detail=detail[:512])
    db.add(row)
    log.info("audit: %s %s %s%s", actor, action, subject, f" ({detail})" if detail else "")
    return row


def entries(db: Session, subject: str | None = None, limit: int = 50) -> list[AuditEntry]:
    """The newest audit rows, of one subject when given."""
    q = sa.select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
    if subject is not None:
        q = q.where(AuditEntry.subject == subject)
    return list(db.scalars(q))
