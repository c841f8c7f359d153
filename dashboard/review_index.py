"""The queued faces' encodings in memory, so grouping a new face does not read (and unseal) every queued vector.

One per dashboard process (`Services.review_index`). Several processes share one queue, so before each use the
index compares a fingerprint of the queued set that the database answers from its index on `state` (count, max id,
sum of ids, sum of group ids) with its own: equal, nothing is read; different, it reads the ids of the queued faces
(integers, no vectors), drops those that left the queue (resolved, erased, expired) and reads the vectors of those it
lacks (added by another process); still different (a row changed under a known id: SQLite reuses the id of a deleted
last row), it reads everything again. As a backstop against a change the fingerprint cannot see (an id reused with
the same group), it also reads everything again every `full_every_s`.

Cost per new face, with nothing changed elsewhere: one aggregate query and a numpy pass over N x 128 floats
(bench.library_pages measures it at 10,000 queued faces).
"""
from __future__ import annotations

import threading
import time
from typing import Callable, Optional

import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import Session

from dashboard import likeness
from dashboard.library_models import ReviewFace

QUEUED = "queued"


class QueueIndex:
    """Queued face id -> (encoding, group); `lock` serialises a process's adds (group, insert, note) against it."""

    def __init__(self, full_every_s: float = 300.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.lock = threading.RLock()
        self.full_every_s = full_every_s
        self._clock = clock
        self._full_at = float("-inf")
        self._ids = np.zeros(0, np.int64)
        self._groups = np.zeros(0, np.int64)
        self._vectors = np.zeros((0, likeness.DIM), np.float32)
        self.reads = 0  # vectors read from the database since start (for the bench and tests)

    def __len__(self) -> int:
        return len(self._ids)

    def _fingerprint(self) -> tuple[int, int, int, int]:
        if not len(self._ids):
            return 0, 0, 0, 0
        return len(self._ids), int(self._ids.max()), int(self._ids.sum()), int(self._groups.sum())

    def _clear(self) -> None:
        self._ids, self._groups = np.zeros(0, np.int64), np.zeros(0, np.int64)
        self._vectors = np.zeros((0, likeness.DIM), np.float32)

    def sync(self, db: Session) -> None:
        """Bring the index to the queue as `db` sees it now."""
        conn = db.connection()
        q = ReviewFace.state == QUEUED
        if self._clock() - self._full_at >= self.full_every_s:
            self._clear()
            self._full_at = self._clock()
        row = conn.execute(sa.select(sa.func.count(), sa.func.max(ReviewFace.id), sa.func.sum(ReviewFace.id),
                                     sa.func.sum(ReviewFace.group_id)).where(q)).one()
        theirs = tuple(int(x or 0) for x in row)
        if theirs == self._fingerprint():
            return
        for attempt in range(2):
            ids = np.fromiter((i for (i,) in conn.execute(sa.select(ReviewFace.id).where(q))), np.int64)
            keep = np.isin(self._ids, ids)
            self._ids, self._groups, self._vectors = self._ids[keep], self._groups[keep], self._vectors[keep]
            missing = np.setdiff1d(ids, self._ids).tolist()
            for start in range(0, len(missing), 500):
                rows = conn.execute(sa.select(ReviewFace.id, ReviewFace.group_id, ReviewFace.vector)
                                    .where(ReviewFace.id.in_(missing[start:start + 500]), q)).all()
                self.note([r.id for r in rows], [r.group_id for r in rows], [r.vector for r in rows])
                self.reads += len(rows)
            if attempt or self._fingerprint() == theirs:
                return
            self._clear()  # a row changed under an id this index holds: read them all again

    def note(self, ids: list[int], groups: list[int], vectors: list[bytes]) -> None:
        """Faces now queued (this process's own adds, or read by `sync`)."""
        if not ids:
            return
        self._ids = np.concatenate([self._ids, np.asarray(ids, np.int64)])
        self._groups = np.concatenate([self._groups, np.asarray(groups, np.int64)])
        self._vectors = np.concatenate([self._vectors, likeness.vectors(vectors)])

    def forget(self, face_id: int) -> None:
        """A face this process took out of the queue (replaced by a better crop)."""
        keep = self._ids != face_id
        self._ids, self._groups, self._vectors = self._ids[keep], self._groups[keep], self._vectors[keep]

    def group_of(self, probe: np.ndarray) -> Optional[int]:
        """The group of the queued face nearest to `probe` within `likeness.GROUP_DISTANCE`; None: a new group."""
        return likeness.group_of(probe, self._vectors, self._groups)
