"""The face library's tables: the audit of changes made on the dashboard's pages, and the review queue of faces
seen at desks (unknown or not-sure) waiting for an admin to say who they are."""
from __future__ import annotations

import datetime as dt
from typing import Optional

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from dashboard.audit_models import AuditEntry  # noqa: F401 - the audit's table, kept where the library's code finds it
from dashboard.models import Base, UTCDateTime
from dashboard.sealed import Sealed


class ReviewFace(Base):
    """A face from an alert (one best crop per track) with its encoding, waiting in the review queue.

    `group_id` puts faces of the same stranger together (the id of the first face of the group); `state` is
    queued until an admin resolves it: assigned (added to `resolved_as`), stranger (dismissed), not (kept as a
    negative of `resolved_as`)."""

    __tablename__ = "review_faces"
    __table_args__ = (sa.UniqueConstraint("alert_id", "track", name="uq_review_alert_track"),
                      sa.Index("ix_review_state_group", "state", "group_id", "seen_at"))
    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    alert_id: Mapped[str] = mapped_column(sa.String(32), index=True)
    station_id: Mapped[str] = mapped_column(sa.String(64), index=True)
    track: Mapped[int] = mapped_column(sa.Integer)
    verdict: Mapped[str] = mapped_column(sa.String(16))  # unknown | unsure (as the recognizer said)
    candidate: Mapped[Optional[str]] = mapped_column(sa.String(64), nullable=True)  # unsure: the nearest person
    distance: Mapped[Optional[float]] = mapped_column(sa.Float, nullable=True)
    vector: Mapped[bytes] = mapped_column(Sealed("review.vector", long=False))
    seen_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), index=True)
    group_id: Mapped[int] = mapped_column(sa.Integer, index=True)
    state: Mapped[str] = mapped_column(sa.String(16), default="queued")
    resolved_as: Mapped[Optional[str]] = mapped_column(sa.String(64), nullable=True, index=True)
    resolved_by: Mapped[Optional[str]] = mapped_column(sa.String(64), nullable=True)
    resolved_at: Mapped[Optional[dt.datetime]] = mapped_column(UTCDateTime(), nullable=True)


class ReviewCrop(Base):
    """The JPEG crop of a queued face, kept apart so the queue's rows stay small (grouping reads every vector)."""

    __tablename__ = "review_crops"
    face_id: Mapped[int] = mapped_column(sa.Integer, sa.ForeignKey("review_faces.id", ondelete="CASCADE"), primary_key=True)
    data: Mapped[bytes] = mapped_column(Sealed("review.crop"))
