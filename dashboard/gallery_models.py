"""The gallery's tables: enrolled encodings with their provenance, and the ordered change log nodes follow.

`gallery_head` holds the last change number; every write takes its row lock first, so change numbers are
committed in order (a follower asking for changes after N never misses one committed later with a smaller N).
"""
from __future__ import annotations

import datetime as dt
from typing import Optional

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from dashboard.models import Base, UTCDateTime
from dashboard.sealed import Sealed

VECTOR_BYTES = 128 * 4  # one dlib encoding: 128 float32, little-endian


class GalleryEncoding(Base):
    """One enrolled encoding of a person and where it came from (photo, desk, who, which grant)."""

    __tablename__ = "gallery_encodings"
    __table_args__ = (sa.UniqueConstraint("person", "photo_sha256", name="uq_gallery_person_photo"),)
    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    person: Mapped[str] = mapped_column(sa.String(64), index=True)
    vector: Mapped[bytes] = mapped_column(Sealed("gallery.vector", long=False))  # 128 float32 (sealed at rest)
    model: Mapped[str] = mapped_column(sa.String(64))
    source: Mapped[str] = mapped_column(sa.String(256))  # the photo's file name, or capture:<station>
    photo_sha256: Mapped[str] = mapped_column(sa.String(64))  # of the image it was encoded from (re-imports skip it)
    station_id: Mapped[Optional[str]] = mapped_column(sa.String(64), nullable=True)  # the desk of a Capture
    enrolled_by: Mapped[str] = mapped_column(sa.String(64))  # the admin (Capture) or the importer's name
    grant_id: Mapped[Optional[int]] = mapped_column(sa.Integer, nullable=True)  # enrol_grants.id of a Capture
    via: Mapped[str] = mapped_column(sa.String(64))  # the service token that wrote it (a node, or facemon-enrol)
    photo: Mapped[Optional[bytes]] = mapped_column(Sealed("gallery.photo"), nullable=True)  # JPEG of the enrolled face (a crop)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    negative: Mapped[bool] = mapped_column(sa.Boolean, default=False, server_default=sa.false())
    """A face that is NOT this person (a reviewer's "not <person>"): the matcher refuses to accept a face closer
    to it than to the person. Followed as the `not` change, never as an `add`."""
    notice_version: Mapped[Optional[str]] = mapped_column(sa.String(32), nullable=True)  # the privacy notice shown
    notice_confirmed_by: Mapped[Optional[str]] = mapped_column(sa.String(64), nullable=True)  # who confirmed it was


class GalleryChange(Base):
    """One change, numbered: `add` (encoding_id), `not` (a negative of `person`, encoding_id), `drop` (the one
    encoding encoding_id, positive or negative) or `remove` (every encoding of `person`)."""

    __tablename__ = "gallery_changes"
    seq: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=False)
    op: Mapped[str] = mapped_column(sa.String(16))
    person: Mapped[str] = mapped_column(sa.String(64))
    encoding_id: Mapped[Optional[int]] = mapped_column(sa.Integer, nullable=True, index=True)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class GalleryHead(Base):
    """The single row (id 1) holding the number of the last change."""

    __tablename__ = "gallery_head"
    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(sa.Integer)
