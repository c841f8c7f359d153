"""Open-set evidence per frame and N-of-M accumulation per track, on synthetic encodings."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recognizer.identity.index import FaceIndex
from recognizer.identity.match import (
    KNOWN,
    NONE,
    PENDING,
    SUPPORT,
    UNKNOWN,
    UNSURE,
    WEAK,
    IdentityVoter,
    OpenSetParams,
    TrackIdentity,
    evidence,
    person_thresholds,
)
from tests.match.synth import build_index, centres, samples, towards

P = OpenSetParams()


@pytest.fixture(scope="module")
def world() -> tuple[FaceIndex, np.ndarray]:
    return build_index(np.random.default_rng(7), people=6, per_person=3)


@pytest.mark.parametrize("kwargs, word", [
    ({"tolerance": 0}, "tolerance"), ({"accept_distance": 0.7}, "accept_distance"), ({"margin": -0.1}, "margin"),
    ({"min_votes": 0}, "min_votes"), ({"window": 0, "need": 0}, "window"), ({"window": 6, "need": 3}, "need"),
    ({"window": 3, "need": 4}, "need"), ({"person_slack": 0.5}, "person_slack"), ({"max_tracks": 0}, "max_tracks"),
])
def test_params_are_validated(kwargs: dict, word: str) -> None:
    with pytest.raises(ValueError, match=word):
        OpenSetParams(**kwargs)


def test_evidence_kinds(world) -> None:
    index, c = world
    rng = np.random.default_rng(0)
    stranger = centres(rng, 1)[0]
    between = towards(c[0], c[1], 0.5)  # ~0.42 from both: within tolerance, no margin
    ev = evidence(index, np.stack([samples(rng, c[2], 1)[0], stranger, between]))
    assert (ev[0].kind, ev[0].name) == (SUPPORT, "p2") and ev[0].votes >= 2
    assert ev[1].kind == NONE and ev[1].distance > P.tolerance
    assert ev[2].kind == WEAK and abs(ev[2].second - ev[2].distance) < P.margin


def test_evidence_on_empty_index() -> None:
    ev = evidence(FaceIndex.empty(), np.zeros((1, 128), np.float32))
    assert ev[0].kind == NONE and ev[0].name is None


def test_single_enrolled_photo_caps_min_votes() -> None:
    rng = np.random.default_rng(2)
    index, c = build_index(rng, people=3, per_person=1)
    assert evidence(index, samples(rng, c[1], 1))[0].kind == SUPPORT


def test_per_person_thresholds_follow_spread() -> None:
    rng = np.random.default_rng(4)
    c = centres(rng, 3)
    index = (FaceIndex.empty().add("tight", samples(rng, c[0], 3, 0.01), "abc")
             .add("mid", samples(rng, c[1], 3, 0.025), "abc").add("loose", samples(rng, c[2], 3, 0.04), "abc"))
    thr = dict(zip(index.arrays.people, person_thresholds(index, OpenSetParams(accept_distance=0.5, person_slack=0.05))))
    assert thr["tight"] < thr["mid"] < thr["loose"] <= 0.55 + 1e-6
    assert thr["mid"] == pytest.approx(0.5)
    assert set(person_thresholds(index, P)) == {np.float32(P.accept_distance)}


def feed(voter: IdentityVoter, index: FaceIndex, frames: list[np.ndarray], track: int = 1) -> list[TrackIdentity]:
    return [voter.observe(track, index, f) for f in frames]


def test_known_after_need_of_window_never_from_one_frame(world) -> None:
    index, c = world
    rng = np.random.default_rng(1)
    states = feed(IdentityVoter(P), index, list(samples(rng, c[3], 4)))
    assert [s.state for s in states] == [PENDING, PENDING, KNOWN, KNOWN]
    assert states[2].name == "p3" and states[2].observations == 3 and states[2].confidence == 1.0
    assert states[-1].distance < P.accept_distance


def test_stranger_becomes_unknown(world) -> None:
    index, _ = world
    rng = np.random.default_rng(3)
    s = centres(rng, 1)[0]
    states = feed(IdentityVoter(P), index, list(samples(rng, s, 3)))
    assert [x.state for x in states] == [PENDING, PENDING, UNKNOWN] and states[-1].name is None


def test_hysteresis_keeps_a_name_through_weak_frames_and_switches_on_strong_evidence(world) -> None:
    index, c = world
    rng = np.random.default_rng(5)
    voter = IdentityVoter(P)
    feed(voter, index, list(samples(rng, c[0], 3)))
    weak = towards(c[0], c[1], 0.5)
    after_weak = feed(voter, index, [weak] * 6)
    assert all((s.state, s.name) == (KNOWN, "p0") for s in after_weak)
    assert voter.needs_more(1)  # last frame disagrees: the pipeline should look again
    assert voter.take_restarted() == []  # weak frames of the same face: no person swap
    switched = feed(voter, index, list(samples(rng, c[4], 3)))
    # another person in the track's place (farther than the vote radius from its recent encodings): p0's votes
    # go at once, p4 is named on his own `need` frames, with his own distance
    assert [s.name for s in switched] == [None, None, "p4"] and switched[0].observations == 1
    assert voter.take_restarted() == [1]
    assert not voter.needs_more(1)
    gone = feed(voter, index, list(samples(rng, centres(rng, 1)[0], 3)))
    assert [s.state for s in gone] == [PENDING, PENDING, UNKNOWN]
    assert gone[-1].distance > P.tolerance  # the stranger's own, never p4's


def test_a_named_face_seen_from_afar_is_no_swap(world) -> None:
    """A frame supporting the track's name never starts it over, however far from its recent encodings."""
    index, c = world
    rng = np.random.default_rng(11)
    voter = IdentityVoter(P)
    feed(voter, index, list(samples(rng, c[2], 3)))
    states = feed(voter, index, list(samples(rng, c[2], 4, sd=0.04)))
    assert all(s.name == "p2" for s in states) and voter.take_restarted() == []


def test_borderline_face_is_unsure_not_a_stranger(world) -> None:
    index, c = world
    rng = np.random.default_rng(6)
    voter = IdentityVoter(P)
    states = feed(voter, index, [towards(c[0], c[1], 0.5)] * P.window)
    # someone within the vote radius, nobody accepted: "not sure", after a full window, never "unknown"
    assert [s.state for s in states] == [PENDING] * (P.window - 1) + [UNSURE]
    assert states[-1].candidate in ("p0", "p1") and states[-1].name is None
    states = feed(voter, index, list(samples(rng, c[1], 3)))
    assert [s.state for s in states] == [UNSURE, UNSURE, KNOWN] and states[-1].name == "p1"


def test_stranger_is_unknown_and_stays_so_until_someone_is_near(world) -> None:
    index, c = world
    rng = np.random.default_rng(1234)
    voter = IdentityVoter(P)
    stranger = centres(rng, 1)[0]
    states = feed(voter, index, [stranger] * P.need)
    assert [s.state for s in states] == [PENDING] * (P.need - 1) + [UNKNOWN]
    # the same stranger seen once within the vote radius of p0 and p1 (a weak frame, close to her own encodings, so
    # not a person swap) does not make her "unsure"
    weak = towards(stranger, towards(c[0], c[1], 0.5), 0.6)
    assert evidence(index, weak[None])[0].kind == WEAK
    states = feed(voter, index, [weak, stranger])
    assert [s.state for s in states] == [UNKNOWN, UNKNOWN] and voter.take_restarted() == []
    # the last `need` frames all within the radius: no longer called a stranger
    states = feed(voter, index, [weak] * P.need)
    assert states[-1].state == UNSURE


def test_observe_many_equals_observe_one_by_one(world) -> None:
    index, c = world
    rng = np.random.default_rng(8)
    stranger = centres(rng, 1)[0]  # one stranger on track 9 (a new one each frame would be a person swap each frame)
    frames = [[(t, samples(rng, c[t], 1)) for t in range(4)] + [(9, samples(rng, stranger, 1))] for _ in range(4)]
    batch, single = IdentityVoter(P), IdentityVoter(P)
    for frame in frames:
        got = batch.observe_many(frame, index)
        want = {t: single.observe(t, index, e) for t, e in frame}
        assert got.keys() == want.keys()
        for t, ident in got.items():
            assert ident.distance == pytest.approx(want[t].distance, abs=1e-5)
            assert ident == TrackIdentity(want[t].name, want[t].state, ident.distance, want[t].confidence,
                                          want[t].observations)
    assert {t: got[t].name for t in range(4)} == {t: f"p{t}" for t in range(4)} and got[9].state == UNKNOWN


def test_several_encodings_of_one_frame_are_one_observation(world) -> None:
    index, c = world
    voter = IdentityVoter(P)
    ident = voter.observe(1, index, samples(np.random.default_rng(0), c[0], 5))
    assert ident.state == PENDING and ident.observations == 1


def test_empty_observation_forget_and_unseen_tracks(world) -> None:
    index, c = world
    voter = IdentityVoter(P)
    assert voter.current(5) == TrackIdentity(None, PENDING, float("inf"), 0.0, 0) and voter.needs_more(5)
    assert voter.observe(5, index, np.zeros((0, 128), np.float32)).observations == 0
    feed(voter, index, [c[0]] * 3, track=5)
    assert voter.current(5).state == KNOWN
    voter.forget(5)
    voter.forget(5)
    assert voter.current(5).observations == 0


def test_max_tracks_drops_least_recently_observed(world) -> None:
    index, c = world
    voter = IdentityVoter(OpenSetParams(max_tracks=2))
    for t in (1, 2, 1, 3):
        voter.observe(t, index, c[0])
    assert voter.current(2).observations == 0 and voter.current(1).observations == 2


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31), n=st.integers(1, 25), per=st.integers(1, 5))
def test_a_stranger_far_from_everyone_is_never_named(seed: int, n: int, per: int) -> None:
    rng = np.random.default_rng(seed)
    index, _ = build_index(rng, people=8, per_person=per)
    stranger = centres(rng, 1)[0]
    voter = IdentityVoter(P)
    for ident in feed(voter, index, list(samples(rng, stranger, n))):
        assert ident.state != KNOWN and ident.name is None
    assert voter.current(1).state == (UNKNOWN if n >= P.need else PENDING)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31), n=st.integers(2, 30), t=st.floats(0.25, 0.75),
       start=st.sampled_from(["none", "p0", "p1"]))
def test_alternating_borderline_frames_do_not_flicker(seed: int, n: int, t: float, start: str) -> None:
    """Frames alternating between two people's looks (borderline or not) never flip a name back and forth."""
    rng = np.random.default_rng(seed)
    index, c = build_index(rng, people=4, per_person=3)
    voter = IdentityVoter(P)
    if start != "none":
        feed(voter, index, [c[int(start[1])]] * 3)
    frames = [towards(c[0], c[1], t if i % 2 else 1 - t) for i in range(n)]
    names = [s.name for s in feed(voter, index, frames) if s.state == KNOWN]
    changes = sum(a != b for a, b in zip(names, names[1:]))
    assert changes == 0


def test_a_face_too_small_to_judge_is_never_called_a_stranger(world) -> None:
    index, c = world
    rng = np.random.default_rng(21)
    stranger = centres(rng, 1)[0]
    small, big = IdentityVoter(P), IdentityVoter(P)
    for _ in range(P.window):
        got_small = small.observe_many([(1, stranger[None])], index, seen_badly=frozenset({1}))[1]
        got_big = big.observe_many([(1, stranger[None])], index)[1]
    assert got_big.state == UNKNOWN
    assert got_small.state == UNSURE and got_small.name is None
    # ... but a small face can still be named on strong evidence
    named = feed(small, index, list(samples(rng, c[2], P.need)))
    assert named[-1].state == KNOWN and named[-1].name == "p2"
