"""The review queue: faces from alerts (unknown, or not sure) waiting for an admin, grouped by likeness.

An unknown face comes with its `unknown_face` alert; a not-sure one from the recognizer's review poster
(recognizer/alerting/review.py, `POST /api/review/faces`): one best crop and its encoding per track (again for the same
track replaces it). A new face joins the group of the nearest queued face within `likeness.GROUP_DISTANCE` (found in
the process's in-memory `QueueIndex`), so one stranger seen in several alerts is one group. An admin resolves a group: assigned (its faces enrolled as a
person through the one Enroller), stranger (dismissed), or not (kept in the gallery as a negative of a person).
"""
from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
from dataclasses import dataclass
from typing import Optional

import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from dashboard import likeness
from dashboard.gallery_models import VECTOR_BYTES
from dashboard.images import BadImage, check_jpeg
from dashboard.library_models import ReviewCrop, ReviewFace
from dashboard.review_index import QueueIndex
from dashboard.models import utcnow
from shared.names import InvalidName, validate_name

QUEUED, ASSIGNED, STRANGER, NOT = "queued", "assigned", "stranger", "not"
VERDICTS = ("unknown", "unsure")


class BadFace(ValueError):
    """A posted face that cannot be queued; the text says why."""


class QueueFull(BadFace):
    """The posting station already has as many faces waiting for review as it may: nothing is stored (a desk whose
    token leaked, or a recognizer gone wrong, cannot fill the dashboard's disk; other desks are not affected)."""


@dataclass(frozen=True)
class NewFace:
    alert_id: str
    station_id: str
    track: int
    verdict: str
    vector: bytes
    crop: bytes
    seen_at: dt.datetime
    candidate: Optional[str] = None
    distance: Optional[float] = None

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise BadFace(f"verdict must be one of {', '.join(VERDICTS)}, not {self.verdict!r}")
        if len(self.vector) != VECTOR_BYTES:
            raise BadFace(f"vector must be {VECTOR_BYTES} bytes (128 float32), got {len(self.vector)}")
        v = np.frombuffer(self.vector, "<f4")
        if not np.all(np.isfinite(v)) or not 0.1 <= float(np.linalg.norm(v)) <= 10.0:
            raise BadFace("vector is not that of a face encoding (NaN, infinite, or norm far from 1)")
        if isinstance(self.track, bool) or not isinstance(self.track, int) or not 0 <= self.track < 2**31:
            raise BadFace("track must be a whole number 0..2^31")


def parse_face(face: object, alert_id: str, station_id: str, seen_at: dt.datetime) -> NewFace:
    """A face as a recognizer sends it (the `face` of an unknown_face alert's details, or the review API's body):
    `{track, verdict, vector (base64), crop (base64 JPEG), candidate?, distance?}`; BadFace with the reason."""
    if not isinstance(face, dict):
        raise BadFace("face must be a JSON object")
    try:
        candidate = face.get("candidate")
        candidate = None if candidate in (None, "") else validate_name(candidate, "candidate")
        distance = face.get("distance")
        if distance is not None and (isinstance(distance, bool) or not isinstance(distance, (int, float))):
            raise BadFace("distance must be a number")
        vector, crop = (base64.b64decode(face.get(k) or "", validate=True) for k in ("vector", "crop"))
        check_jpeg(crop, "crop")
    except (InvalidName, BadImage, binascii.Error, TypeError, ValueError) as exc:
        raise BadFace(str(exc)) from None
    return NewFace(alert_id, station_id, face.get("track"), face.get("verdict"), vector, crop, seen_at, candidate,
                   None if distance is None else float(distance))


def add_face(factory: sessionmaker[Session], face: NewFace, index: QueueIndex,
             max_queued: Optional[int] = None) -> tuple[int, int]:
    """Queue `face`; (its id, its group). A face already queued for that alert and track is replaced by a new row
    (so `index` never holds a stale vector); one already resolved stays as the admin left it. QueueFull when its
    station already has `max_queued` faces waiting (checked under the index's lock, so faces posted at once cannot
    all slip under the limit)."""
    with index.lock, factory() as db:
        index.sync(db)
        old = db.scalar(sa.select(ReviewFace).where(ReviewFace.alert_id == face.alert_id, ReviewFace.track == face.track))
        if old is not None and old.state != QUEUED:
            return old.id, old.group_id
        if old is None and max_queued is not None:
            waiting = db.scalar(sa.select(sa.func.count()).select_from(ReviewFace).where(
                ReviewFace.station_id == face.station_id, ReviewFace.state == QUEUED)) or 0
            if waiting >= max_queued:
                raise QueueFull(f"station {face.station_id} already has {waiting} faces waiting for review (at most "
                                f"{max_queued}: review_max_queued_per_station); resolve some on /library/review")
        if old is not None:
            index.forget(old.id)
            db.execute(sa.delete(ReviewCrop).where(ReviewCrop.face_id == old.id))
            db.delete(old)
            db.flush()
        group = index.group_of(np.frombuffer(face.vector, "<f4"))
        row = ReviewFace(alert_id=face.alert_id, track=face.track, state=QUEUED, group_id=0,
                         **{k: getattr(face, k) for k in ("station_id", "verdict", "candidate", "distance", "vector", "seen_at")})
        db.add(row)
        db.flush()
        db.add(ReviewCrop(face_id=row.id, data=face.crop))
        row.group_id = group if group is not None else row.id
        db.commit()
        index.note([row.id], [row.group_id], [face.vector])
        return row.id, row.group_id


@dataclass(frozen=True)
class Group:
    group_id: int
    count: int
    first_seen: dt.datetime
    last_seen: dt.datetime
    faces: list  # up to `shown` rows (no blobs): id, alert_id, station_id, verdict, candidate, distance, seen_at
    stations: list[str]
    candidates: list[str]  # people the recognizer was not sure about, for "not <person>"


def groups_page(db: Session, page: int, per_page: int, shown: int = 6) -> tuple[list[Group], int]:
    """One page of queued groups, most recently seen first, and the number of groups."""
    conn = db.connection()
    total = conn.scalar(sa.select(sa.func.count(sa.distinct(ReviewFace.group_id))).where(ReviewFace.state == QUEUED)) or 0
    heads = conn.execute(
        sa.select(ReviewFace.group_id, sa.func.count().label("n"), sa.func.min(ReviewFace.seen_at).label("first"),
                  sa.func.max(ReviewFace.seen_at).label("last"))
        .where(ReviewFace.state == QUEUED).group_by(ReviewFace.group_id)
        .order_by(sa.func.max(ReviewFace.seen_at).desc(), ReviewFace.group_id.desc())
        .limit(per_page).offset((page - 1) * per_page)).all()
    ids = [h.group_id for h in heads]
    faces: dict[int, list] = {i: [] for i in ids}
    if ids:
        for f in conn.execute(sa.select(ReviewFace.id, ReviewFace.group_id, ReviewFace.alert_id, ReviewFace.station_id,
                                      ReviewFace.verdict, ReviewFace.candidate, ReviewFace.distance, ReviewFace.seen_at)
                            .where(ReviewFace.state == QUEUED, ReviewFace.group_id.in_(ids))
                            .order_by(ReviewFace.seen_at.desc())):
            faces[f.group_id].append(f)
    out = []
    for h in heads:
        fs = faces[h.group_id]
        out.append(Group(h.group_id, h.n, h.first, h.last, fs[:shown], sorted({f.station_id for f in fs}),
                         sorted({f.candidate for f in fs if f.verdict == "unsure" and f.candidate})))
    return out, total


def group_faces(db: Session, group_id: int) -> list[tuple[ReviewFace, bytes]]:
    """The queued faces of a group with their crops."""
    return [(f, c) for f, c in db.execute(
        sa.select(ReviewFace, ReviewCrop.data).join(ReviewCrop, ReviewCrop.face_id == ReviewFace.id)
        .where(ReviewFace.state == QUEUED, ReviewFace.group_id == group_id).order_by(ReviewFace.id))]


def crop_of(db: Session, face_id: int) -> Optional[bytes]:
    return db.scalar(sa.select(ReviewCrop.data).where(ReviewCrop.face_id == face_id))


def resolve(db: Session, ids: list[int], state: str, person: Optional[str], by: str) -> int:
    """Mark queued faces resolved (in the caller's transaction); how many were still queued."""
    return db.execute(sa.update(ReviewFace).where(ReviewFace.id.in_(ids), ReviewFace.state == QUEUED)
                      .values(state=state, resolved_as=person, resolved_by=by, resolved_at=utcnow())).rowcount or 0


def crop_digest(crop: bytes) -> str:
    return hashlib.sha256(crop).hexdigest()


def search_by_person(db: Session, person: str, limit: int = 100) -> list[ReviewFace]:
    """Past faces resolved as `person` (assigned, or kept as not-them), newest first."""
    return list(db.scalars(sa.select(ReviewFace).where(ReviewFace.resolved_as == person)
                           .order_by(ReviewFace.seen_at.desc()).limit(limit)))


def search_by_likeness(db: Session, probe: np.ndarray, k: int = 50,
                       within: float = likeness.GROUP_DISTANCE + 0.1) -> list[tuple[ReviewFace, float]]:
    """Past faces (any state) most like `probe`, nearest first, with their distance."""
    rows = db.execute(sa.select(ReviewFace.id, ReviewFace.vector)).all()
    hits = likeness.nearest(probe, likeness.vectors([r.vector for r in rows]), k, within)
    by_id = {f.id: f for f in db.scalars(sa.select(ReviewFace).where(ReviewFace.id.in_([rows[i].id for i, _ in hits])))}
    return [(by_id[rows[i].id], d) for i, d in hits]
