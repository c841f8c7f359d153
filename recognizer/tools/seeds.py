"""The seeds' matching rule, kept to compare against (facemon-calibrate, bench/accuracy.py, bench/throughput.py).

Every enrolled encoding within `tolerance` (Euclidean distance between 128-D dlib encodings; 0.6 is dlib's usual
operating point, lower is stricter) votes for its person; the person with most votes wins; no votes means unknown.
The recognizer itself decides with the open-set rule (`recognizer.identity.match`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from recognizer.identity.index import FaceIndex
from recognizer.identity.match import person_scores


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


def vote(index: FaceIndex, encodings: np.ndarray, params: MatchParams = MatchParams()) -> list[Match]:
    """Match k encodings (k,128) with the seeds' vote; one Match per encoding."""
    s = person_scores(index, encodings, params.tolerance)
    out = []
    for near, votes in zip(s.nearest, s.votes):
        best = int(votes.max()) if votes.size else 0
        if best == 0:
            out.append(Match(None, float(near.min()) if near.size else float("inf"), 0))
            continue
        # ties between equally voted people go to the one with the closest encoding
        tied = np.flatnonzero(votes == best)
        winner = int(tied[np.argmin(near[tied])])
        out.append(Match(s.people[winner], float(near[winner]), best))
    return out
