"""Vectorised scoring: per-person minima and votes, and the seeds' vote kept as it was."""
from __future__ import annotations

from typing import Optional

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from recognizer.identity.index import FaceIndex
from recognizer.identity.match import distances, person_scores
from recognizer.tools.seeds import Match, MatchParams, vote
from tests.match.synth import build_index, centres, samples


def seeds_vote(index: FaceIndex, encodings: np.ndarray, tolerance: float) -> list[Match]:
    """The seeds' loop, written plainly, as the reference for `vote`."""
    names = np.array(index.names)
    out = []
    for row in distances(index, encodings):
        within = row <= tolerance
        if not within.any():
            out.append(Match(None, float(row.min()), 0))
            continue
        voters, counts = np.unique(names[within], return_counts=True)
        tied = voters[counts == counts.max()]
        winner: Optional[str] = min(tied, key=lambda n: row[names == n].min())
        out.append(Match(str(winner), float(row[names == winner].min()), int(counts.max())))
    return out


def shuffled_index(rng: np.random.Generator, people: int, per_person: int) -> FaceIndex:
    """An index whose encodings are interleaved between people (not enrolled person by person)."""
    c = centres(rng, people)
    rows = [(f"p{i}", s) for i, centre in enumerate(c) for s in samples(rng, centre, per_person)]
    order = rng.permutation(len(rows))
    return FaceIndex(tuple(rows[i][0] for i in order), np.stack([rows[i][1] for i in order]),
                     tuple(str(i) for i in order))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31), people=st.integers(1, 6), per=st.integers(1, 4),
       tol=st.sampled_from([0.4, 0.5, 0.6, 0.7]))
def test_vote_matches_the_seeds_loop(seed: int, people: int, per: int, tol: float) -> None:
    rng = np.random.default_rng(seed)
    index = shuffled_index(rng, people, per)
    queries = np.concatenate([samples(rng, index.encodings[0], 3, 0.03), samples(rng, index.encodings[-1], 3, 0.05)])
    got = vote(index, queries, MatchParams(tol))
    want = seeds_vote(index, queries, tol)
    assert [(m.name, m.votes) for m in got] == [(m.name, m.votes) for m in want]
    np.testing.assert_allclose([m.distance for m in got], [m.distance for m in want], atol=1e-4)


def test_person_scores_agree_with_brute_force() -> None:
    rng = np.random.default_rng(1)
    index = shuffled_index(rng, 4, 3)
    q = samples(rng, index.encodings[2], 5, 0.04)
    s = person_scores(index, q, 0.6)
    d = distances(index, q)
    names = np.array(index.names)
    for p, name in enumerate(s.people):
        mine = index.encodings[names == name]
        to_mean = np.linalg.norm(q - mine.mean(axis=0), axis=1)  # the person's prototype
        np.testing.assert_allclose(s.nearest[:, p], d[:, names == name].min(axis=1), atol=1e-4)
        np.testing.assert_allclose(s.distance[:, p], np.minimum(d[:, names == name].min(axis=1), to_mean), atol=1e-4)
        np.testing.assert_array_equal(s.votes[:, p], (d[:, names == name] <= 0.6).sum(axis=1))


def test_empty_index_and_no_queries() -> None:
    empty = FaceIndex.empty()
    assert vote(empty, np.zeros((2, 128), np.float32)) == [Match(None, float("inf"), 0)] * 2
    index, _ = build_index(np.random.default_rng(0), 2, 2)
    assert vote(index, np.zeros((0, 128), np.float32)) == []
    assert person_scores(index, np.zeros((0, 128)), 0.6).nearest.shape == (0, 2)


def test_label_arrays_group_interleaved_people() -> None:
    index = shuffled_index(np.random.default_rng(3), 3, 2)
    a = index.arrays
    assert sorted(a.people) == ["p0", "p1", "p2"]
    assert list(a.counts) == [2, 2, 2] and list(a.starts) == [0, 2, 4]
    for p, name in enumerate(a.people):
        mine = index.encodings[np.array(index.names) == name]
        np.testing.assert_array_equal(np.sort(a.grouped[a.labels == p], axis=0), np.sort(mine, axis=0))
    assert index.arrays is a  # cached


def test_bad_encoding_shape_is_refused() -> None:
    index, _ = build_index(np.random.default_rng(0), 2, 2)
    try:
        vote(index, np.zeros((2, 100), np.float32))
    except ValueError as exc:
        assert "128" in str(exc)
    else:
        raise AssertionError("a (2,100) query was accepted")
