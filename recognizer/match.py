"""Matching face encodings against the enrolled index by voting.

The seeds' rule: every enrolled encoding within `tolerance` (Euclidean distance between 128-D
dlib encodings; 0.6 is dlib's usual operating point, lower is stricter) votes for its person;
the person with most votes wins; no votes means unknown.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from recognizer.index import FaceIndex


@dataclass(frozen=True)
class MatchParams:
    """Thresholds of the vote. `tolerance` is a Euclidean distance between encodings (0.6 typical)."""

    tolerance: float = 0.6

    def __post_init__(self) -> None:
        if not 0.0 < self.tolerance < 2.0:
            raise ValueError(f"tolerance must be between 0 and 2 (0.6 is typical), got {self.tolerance}")


@dataclass(frozen=True)
class Match:
    """Outcome for one face: `name` None means unknown. `distance` is to the closest encoding of the winner
    (or of anyone, when unknown)."""

    name: Optional[str]
    distance: float
    votes: int


def distances(index: FaceIndex, encodings: np.ndarray) -> np.ndarray:
    """Euclidean distances (k, N) between k query encodings and the N enrolled ones."""
    q = np.asarray(encodings, np.float32).reshape(-1, index.encodings.shape[1])
    e = index.encodings
    # |q-e|^2 = |q|^2 + |e|^2 - 2 q.e : one matrix product instead of a (k,N,128) temporary
    d2 = (q * q).sum(1)[:, None] + (e * e).sum(1)[None, :] - 2.0 * (q @ e.T)
    return np.sqrt(np.maximum(d2, 0.0))


def vote(index: FaceIndex, encodings: np.ndarray, params: MatchParams = MatchParams()) -> list[Match]:
    """Match k encodings (k,128) with the seeds' vote; one Match per encoding."""
    k = len(encodings)
    if len(index) == 0:
        return [Match(None, float("inf"), 0) for _ in range(k)]
    d = distances(index, encodings)
    names = np.array(index.names)
    out = []
    for row in d:
        within = row <= params.tolerance
        if not within.any():
            out.append(Match(None, float(row.min()), 0))
            continue
        voters, counts = np.unique(names[within], return_counts=True)
        best = counts.max()
        tied = voters[counts == best]
        # ties between equally voted people go to the one with the closest encoding
        winner = min(tied, key=lambda n: row[names == n].min())
        out.append(Match(str(winner), float(row[names == winner].min()), int(best)))
    return out
