"""The audit's tables: one row per look at or change of personal data, each chained to the one before by a hash,
and the head.

`audit_head` (one row, id 1) holds the last entry's number and hash, and the anchor the first kept entry chains to
(retention trims the oldest entries and moves the anchor in the same transaction). Every append takes the head's
row lock first, so entries are chained in order on every backend.
"""
from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from dashboard.models import Base, UTCDateTime

GENESIS = "0" * 64  # the hash the very first entry chains to


class AuditEntry(Base):
    """Who did what (`action`) to whom/what (`subject`, `detail`), when, from which address;
    `hash` = sha256(prev_hash + the entry's canonical JSON)."""

    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=False)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), index=True)
    actor: Mapped[str] = mapped_column(sa.String(64), index=True)
    action: Mapped[str] = mapped_column(sa.String(32), index=True)
    subject: Mapped[str] = mapped_column(sa.String(64), index=True)
    detail: Mapped[str] = mapped_column(sa.String(512), default="")
    address: Mapped[str] = mapped_column(sa.String(64), default="", server_default="")
    prev_hash: Mapped[str] = mapped_column(sa.String(64), default="", server_default="")
    hash: Mapped[str] = mapped_column(sa.String(64), default="", server_default="")


class AuditHead(Base):
    """The single row (id 1): the last entry's number and hash, and the anchor of the oldest kept entry."""

    __tablename__ = "audit_head"
    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(sa.Integer)
    last_hash: Mapped[str] = mapped_column(sa.String(64))
    anchor_id: Mapped[int] = mapped_column(sa.Integer)  # entries below this were removed by retention
    anchor_hash: Mapped[str] = mapped_column(sa.String(64))  # the prev_hash entry `anchor_id` must carry
