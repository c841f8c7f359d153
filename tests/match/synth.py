"""Synthetic dlib-like encodings: people as clusters in 128-D with dlib's typical distances."""
from __future__ import annotations

import numpy as np

from recognizer.identity.index import DIM, FaceIndex

# per-dimension spreads chosen so distances look like dlib's: ~0.85 between people, ~0.4 within
PERSON_SD = 0.053
SAMPLE_SD = 0.025


def centres(rng: np.random.Generator, people: int) -> np.ndarray:
    """Identity centres (people,128) with norms ~1.4 like dlib encodings (a shared offset keeps distances)."""
    offset = np.full(DIM, 0.12, np.float32)
    return (offset + rng.normal(0, PERSON_SD, (people, DIM))).astype(np.float32)


def samples(rng: np.random.Generator, centre: np.ndarray, n: int, sd: float = SAMPLE_SD) -> np.ndarray:
    """n encodings of the person at `centre`."""
    return (centre + rng.normal(0, sd, (n, DIM))).astype(np.float32)


def build_index(rng: np.random.Generator, people: int = 5, per_person: int = 3) -> tuple[FaceIndex, np.ndarray]:
    """An index of `people` persons named p0.. with `per_person` encodings each, and their centres."""
    c = centres(rng, people)
    index = FaceIndex.empty()
    for i, centre in enumerate(c):
        index = index.add(f"p{i}", samples(rng, centre, per_person), [f"p{i}/{j}.jpg" for j in range(per_person)])
    return index, c


def towards(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    """The point a fraction t of the way from a to b."""
    return (a + t * (b - a)).astype(np.float32)
