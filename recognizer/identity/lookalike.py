"""Enrolment that cannot confuse two people: a new face within the accept distance of someone else already
enrolled is refused ("looks like Lin (0.41)") unless an admin confirms that very lookalike. Pure: an index and an
encoding in, a verdict out, so every enrolment path (Capture, a gallery kept in a database) calls the same rule.

Why refuse: enrolling Lin's face as "Test Evaluator" puts two names within the vote radius of one face, so Lin is
"not sure" from then on and either name raises `wrong_person` at the other's desk.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from recognizer.identity.index import FaceIndex
from recognizer.identity.match import person_scores


@dataclass(frozen=True)
class Lookalike:
    name: str  # the enrolled person the new face is closest to
    distance: float  # that person's distance (as the matcher judges it: nearest photo or mean encoding)

    def message(self) -> str:
        return f"looks like {self.name} ({self.distance:.2f})"


def find_lookalike(index: FaceIndex, encoding: np.ndarray, name: str, accept_distance: float) -> Optional[Lookalike]:
    """The closest person other than `name` whose distance to `encoding` (128,) is within `accept_distance`,
    i.e. someone the recognizer would accept this face as; None when nobody else is that close."""
    if len(index) == 0:
        return None
    scores = person_scores(index, np.asarray(encoding, np.float32).reshape(1, -1), accept_distance)
    best: Optional[Lookalike] = None
    for person, d in zip(scores.people, scores.distance[0]):
        if person != name and d <= accept_distance and (best is None or d < best.distance):
            best = Lookalike(person, float(d))
    return best


def lookalike_refusal(found: Optional[Lookalike], confirmed: str) -> Optional[str]:
    """The refusal reason, or None when enrolment may go ahead: nobody alike, or an admin confirmed exactly this
    person (a confirmation of someone else does not carry over)."""
    if found is None or confirmed == found.name:
        return None
    return (f"{found.message()}: this face is already enrolled as {found.name}, so enrolling it under another name "
            f"would confuse the two; an admin may confirm it deliberately")


@dataclass(frozen=True)
class SharedFace:
    """Two people of one folder build whose photos hold one face: `source` (a photo of `name`) is within the accept
    distance of `other` (the closest such photo of each pair)."""

    name: str
    other: str
    distance: float
    source: str

    def pair(self) -> frozenset[str]:
        return frozenset((self.name, self.other))

    def message(self) -> str:
        return f"{self.source} ({self.name}) looks like {self.other} ({self.distance:.2f})"


def shared_faces(index: FaceIndex, accept_distance: float) -> list[SharedFace]:
    """Every pair of people in `index` with a photo of one within `accept_distance` of the other (Capture's rule,
    applied to a whole folder built at once), the closest photo per pair, closest pair first."""
    closest: dict[frozenset[str], SharedFace] = {}
    for name, encoding, source in zip(index.names, index.encodings, index.sources):
        found = find_lookalike(index, encoding, name, accept_distance)
        if found is None:
            continue
        hit = SharedFace(name, found.name, found.distance, source)
        if hit.pair() not in closest or hit.distance < closest[hit.pair()].distance:
            closest[hit.pair()] = hit
    return sorted(closest.values(), key=lambda s: s.distance)
