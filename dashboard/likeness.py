"""Likeness between stored face encodings (128 little-endian float32, as the gallery keeps them). Pure numpy.

- `far_photos`: a person's photos whose encoding sits far from the mean of their other photos (a likely
  wrong photo), with that distance;
- `group_of`: the group a new face joins (the nearest queued face's, within `GROUP_DISTANCE`), so faces of one
  stranger across alerts are shown together;
- `nearest`: the stored faces most like a probe, for search by likeness.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

DIM = 128
FAR_DISTANCE = 0.6  # dlib's vote radius: a photo farther than this from its person's other photos is suspect
GROUP_DISTANCE = 0.5  # same person ~0.42 on average, different people ~0.85 (closest ~0.52): one stranger's faces


def vectors(raw: Sequence[bytes]) -> np.ndarray:
    """(N, 128) float32 of stored encodings."""
    if not raw:
        return np.zeros((0, DIM), np.float32)
    return np.frombuffer(b"".join(raw), "<f4").reshape(-1, DIM).astype(np.float32, copy=False)


def distances(probe: np.ndarray, stored: np.ndarray) -> np.ndarray:
    """(N,) Euclidean distances of one probe (128,) to N stored encodings."""
    if len(stored) == 0:
        return np.zeros(0, np.float32)
    return np.sqrt(np.maximum(((stored - probe[None, :]) ** 2).sum(1), 0.0))


def far_photos(encodings: np.ndarray, far: float = FAR_DISTANCE) -> list[Optional[float]]:
    """Per photo of one person: the distance to the mean of their other photos when above `far`, else None.
    A person with one photo has nothing to compare with (None)."""
    n = len(encodings)
    if n < 2:
        return [None] * n
    total = encodings.sum(0)
    out: list[Optional[float]] = []
    for i in range(n):
        others = (total - encodings[i]) / (n - 1)
        d = float(np.sqrt(((encodings[i] - others) ** 2).sum()))
        out.append(round(d, 3) if d > far else None)
    return out


def group_of(probe: np.ndarray, queued: np.ndarray, groups: Sequence[int], within: float = GROUP_DISTANCE) -> Optional[int]:
    """The group of the queued face nearest to `probe` when it is within `within`; None: a new group."""
    if len(queued) == 0:
        return None
    d = distances(probe, queued)
    i = int(np.argmin(d))
    return int(groups[i]) if d[i] <= within else None


def nearest(probe: np.ndarray, stored: np.ndarray, k: int, within: float) -> list[tuple[int, float]]:
    """(position, distance) of up to `k` stored encodings within `within` of `probe`, nearest first."""
    d = distances(probe, stored)
    order = np.argsort(d, kind="stable")[:k]
    return [(int(i), round(float(d[i]), 3)) for i in order if d[i] <= within]
