"""The gallery's rules: add an encoding with its provenance, remove a person, read the numbered changes after N.

Pure database logic (no Flask). Writers serialise on the `gallery_head` row, so change numbers are committed
in order on every backend (SQLite's write lock, a row lock on PostgreSQL/MariaDB). An encoding is stored once
per (person, photo): importing the same folder again changes nothing.
"""
from __future__ import annotations

import base64
import logging
import math
import struct
import threading
from dataclasses import dataclass
from typing import Callable, Optional

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from dashboard.gallery_models import VECTOR_BYTES, GalleryChange, GalleryEncoding, GalleryHead
from dashboard.models import utcnow

log = logging.getLogger(__name__)
MAX_ATTEMPTS = 5


class BadEncoding(ValueError):
    """An encoding or its provenance that cannot be stored; the text says why."""


@dataclass(frozen=True)
class NewEncoding:
    """What a node (a Capture) or facemon-enrol (a folder import) adds."""

    person: str
    vector: bytes  # 128 float32, little-endian
    model: str
    source: str
    photo_sha256: str
    enrolled_by: str
    via: str
    station_id: Optional[str] = None
    grant_id: Optional[int] = None
    photo: Optional[bytes] = None
    negative: bool = False  # a face that is NOT `person` (followed as a `not` change)
    notice_version: Optional[str] = None  # the privacy notice the person was shown before enrolment
    notice_confirmed_by: Optional[str] = None  # who confirmed they were shown it

    def __post_init__(self) -> None:
        if len(self.vector) != VECTOR_BYTES:
            raise BadEncoding(f"vector must be {VECTOR_BYTES} bytes (128 float32), got {len(self.vector)}")
        values = struct.unpack("<128f", self.vector)
        if not all(math.isfinite(v) for v in values):
            raise BadEncoding("vector holds a NaN or infinite value")
        norm = math.sqrt(sum(v * v for v in values))
        if not 0.1 <= norm <= 10.0:  # dlib's encodings have norm ~1; zeros or huge values are not encodings
            raise BadEncoding(f"vector norm {norm:.3g} is not that of a face encoding")
        if len(self.photo_sha256) != 64 or any(c not in "0123456789abcdef" for c in self.photo_sha256):
            raise BadEncoding("photo_sha256 must be 64 lowercase hex digits")
        for name, value, most in (("model", self.model, 64), ("source", self.source, 256),
                                  ("enrolled_by", self.enrolled_by, 64)):
            if not isinstance(value, str) or not 0 < len(value) <= most:
                raise BadEncoding(f"{name} must be a string of 1 to {most} characters")


class ChangeNotifier:
    """Wakes long-polls in this process when a change is committed (other processes are seen by polling)."""

    def __init__(self, max_waiters: int) -> None:
        self._cond = threading.Condition()
        self._seq = 0
        self._slots = threading.BoundedSemaphore(max_waiters)  # each waiting long-poll holds a server thread

    def enter(self) -> bool:
        """Take a waiter's place (taken before the wait, so a flood at once cannot exceed it); False when full."""
        return self._slots.acquire(blocking=False)

    def leave(self) -> None:
        self._slots.release()

    def committed(self, seq: int) -> None:
        with self._cond:
            self._seq = max(self._seq, seq)
            self._cond.notify_all()

    def wait_past(self, seq: int, timeout_s: float) -> bool:
        """Wait up to `timeout_s` for a change after `seq` committed here; True if one was."""
        with self._cond:
            return self._cond.wait_for(lambda: self._seq > seq, timeout_s)


def _next_seq(db: Session) -> int:
    head = db.scalar(sa.select(GalleryHead).where(GalleryHead.id == 1).with_for_update())
    if head is None:  # emptied by hand: start again after the last change (two writers racing: one retries)
        head = GalleryHead(id=1, seq=db.scalar(sa.select(sa.func.max(GalleryChange.seq))) or 0)
        db.add(head)
        db.flush()
    head.seq += 1
    return head.seq


def _retrying(factory: sessionmaker[Session], work):  # noqa: ANN001, ANN202 - work(db) -> result
    for attempt in range(1, MAX_ATTEMPTS + 1):
        with factory() as db:
            try:
                result = work(db)
                db.commit()
                return result
            except (sa.exc.OperationalError, sa.exc.IntegrityError) as exc:  # deadlock / lock wait (MySQL), busy
                db.rollback()  # (SQLite), two writers creating the head row at once
                if attempt == MAX_ATTEMPTS:
                    raise
                log.info("gallery write retried after %s", exc.orig)


Also = Optional[Callable[[Session], None]]
"""More work for the same transaction (an audit row): committed with the change, or not at all."""


def add_encoding(factory: sessionmaker[Session], new: NewEncoding, also: Also = None) -> tuple[dict, bool]:
    """Store `new` and its `add` change; (the change as `change_dict` gives it, True) — or, when that person
    already has an encoding from the same photo, (that encoding's change, False)."""

    def work(db: Session) -> tuple[dict, bool]:
        seq = _next_seq(db)  # first: the head's lock serialises writers, so the duplicate check below is safe
        existing = db.scalar(sa.select(GalleryEncoding).where(
            GalleryEncoding.person == new.person, GalleryEncoding.photo_sha256 == new.photo_sha256))
        if existing is not None:
            db.rollback()
            change = db.scalar(sa.select(GalleryChange).where(GalleryChange.encoding_id == existing.id))
            return change_dict(change, existing), False
        now = utcnow()
        row = GalleryEncoding(person=new.person, vector=new.vector, model=new.model, source=new.source,
                              photo_sha256=new.photo_sha256, station_id=new.station_id, enrolled_by=new.enrolled_by,
                              grant_id=new.grant_id, via=new.via, photo=new.photo, created_at=now, negative=new.negative,
                              notice_version=new.notice_version, notice_confirmed_by=new.notice_confirmed_by)
        db.add(row)
        db.flush()
        change = GalleryChange(seq=seq, op="not" if new.negative else "add", person=new.person, encoding_id=row.id, at=now)
        db.add(change)
        db.flush()
        if also is not None:
            also(db)
        return change_dict(change, row), True

    return _retrying(factory, work)


def remove_person(factory: sessionmaker[Session], person: str, also: Also = None) -> tuple[int, int]:
    """Delete every encoding (and photo) of `person` and log a `remove` change; (encodings removed, its seq)."""

    def work(db: Session) -> tuple[int, int]:
        seq = _next_seq(db)
        removed = db.execute(sa.delete(GalleryEncoding).where(GalleryEncoding.person == person)).rowcount or 0
        if not removed:
            db.rollback()
            return 0, head_seq(db)
        db.add(GalleryChange(seq=seq, op="remove", person=person, encoding_id=None, at=utcnow()))
        if also is not None:
            also(db)
        return removed, seq

    return _retrying(factory, work)


def drop_encoding(factory: sessionmaker[Session], encoding_id: int, also: Also = None) -> Optional[tuple[str, int]]:
    """Delete one encoding (a photo, or a negative) and log a `drop` change; (its person, the seq), None if absent."""

    def work(db: Session) -> Optional[tuple[str, int]]:
        seq = _next_seq(db)
        row = db.get(GalleryEncoding, encoding_id)
        if row is None:
            db.rollback()
            return None
        person = row.person
        db.delete(row)
        db.add(GalleryChange(seq=seq, op="drop", person=person, encoding_id=encoding_id, at=utcnow()))
        if also is not None:
            also(db)
        return person, seq

    return _retrying(factory, work)


class NameTaken(ValueError):
    """A rename to a name someone already has."""


def rename_person(factory: sessionmaker[Session], old: str, new: str, also: Also = None) -> Optional[int]:
    """Give every encoding of `old` the name `new`: a `remove` of `old`, then an `add` (or `not`) of each encoding
    under `new` (the ids stay), so a follower needs no new kind of change. The last seq; None if `old` has none.
    NameTaken when `new` is already enrolled (merging two people is a decision, not a rename)."""

    def work(db: Session) -> Optional[int]:
        seq = _next_seq(db)
        if db.scalar(sa.select(sa.func.count()).select_from(GalleryEncoding).where(GalleryEncoding.person == new)):
            db.rollback()
            raise NameTaken(f"{new!r} is already enrolled; remove or rename them first")
        rows = db.scalars(sa.select(GalleryEncoding).where(GalleryEncoding.person == old).order_by(GalleryEncoding.id)).all()
        if not rows:
            db.rollback()
            return None
        now = utcnow()
        db.add(GalleryChange(seq=seq, op="remove", person=old, encoding_id=None, at=now))
        for row in rows:
            row.person = new
            db.flush()
            seq = _next_seq(db)
            db.add(GalleryChange(seq=seq, op="not" if row.negative else "add", person=new, encoding_id=row.id, at=now))
        db.flush()
        if also is not None:
            also(db)
        return seq

    return _retrying(factory, work)


def head_seq(db: Session) -> int:
    return db.scalar(sa.select(GalleryHead.seq).where(GalleryHead.id == 1)) or 0


def change_dict(change: GalleryChange, enc: Optional[GalleryEncoding]) -> dict:
    """The wire form of a change. An `add` (or `not`) whose encoding was removed since, or that was renamed since
    (the row's person differs), has no vector: followers skip it, a later change carries it."""
    out = {"seq": change.seq, "op": change.op, "person": change.person}
    if change.op == "drop":
        out["id"] = change.encoding_id
    if change.op in ("add", "not"):
        out["id"] = change.encoding_id
        if enc is not None and enc.person == change.person:
            out.update(vector=base64.b64encode(enc.vector).decode(), model=enc.model, source=enc.source)
    return out


def changes_after(db: Session, after: int, limit: int) -> tuple[list[dict], int]:
    """Up to `limit` changes numbered above `after`, oldest first, and the head's number."""
    head = head_seq(db)
    rows = db.execute(
        sa.select(GalleryChange, GalleryEncoding).outerjoin(GalleryEncoding, GalleryEncoding.id == GalleryChange.encoding_id)
        .where(GalleryChange.seq > after, GalleryChange.seq <= head).order_by(GalleryChange.seq).limit(limit)
    ).all()
    return [change_dict(c, e) for c, e in rows], head


def people(db: Session) -> list[dict]:
    """Every enrolled person with their encodings' count and provenance (no vectors, no photos)."""
    out: dict[str, dict] = {}
    for e in db.scalars(sa.select(GalleryEncoding).order_by(GalleryEncoding.person, GalleryEncoding.id)):
        person = out.setdefault(e.person, {"person": e.person, "encodings": []})
        person["encodings"].append({
            "id": e.id, "source": e.source, "station_id": e.station_id, "enrolled_by": e.enrolled_by,
            "grant_id": e.grant_id, "via": e.via, "created_at": e.created_at.isoformat(), "has_photo": e.photo is not None,
        })
    return list(out.values())
