"""The pure 1:1 verification state machine (recognizer/station/verify.py): frames in, decision out."""
from __future__ import annotations

import math

import pytest

from recognizer.station.verify import FAILED, PASSED, PENDING, Observation, Verifier, VerifyParams
from shared.signin import NO_BLINK, NO_FACE, NOT_ENROLLED, NOT_HOLDER, SEVERAL_FACES, TIMED_OUT, describe

GOOD = dict(faces=1, distance=0.35, other=0.8)


def feed(v: Verifier, n: int, t0: float = 0.0, dt: float = 0.1, blink_at: int | None = None, **kw):
    blinks = 0
    p = None
    for i in range(n):
        if blink_at is not None and i == blink_at:
            blinks += 1
        p = v.observe(Observation(t=t0 + i * dt, blinks=blinks, **kw))
    return p


def test_passes_after_n_agreeing_frames_with_a_blink():
    v = Verifier("alice", VerifyParams(frames=10))
    p = feed(v, 9, blink_at=3, **GOOD)
    assert p.state == PENDING and p.agreeing == 9 and p.blinked
    p = v.observe(Observation(t=1.0, blinks=1, **GOOD))
    assert p.state == PASSED and p.agreeing == 10 and p.reason == ""
    # final: later frames change nothing
    assert v.observe(Observation(t=1.1, faces=0)).state == PASSED


def test_a_still_photo_never_passes_and_fails_for_no_blink():
    v = Verifier("alice", VerifyParams(frames=10, timeout_s=5))
    p = feed(v, 40, **GOOD)  # 4 s of agreeing frames, no blink
    assert p.state == PENDING and p.reason == NO_BLINK and p.agreeing == 10
    p = v.tick(5.0)
    assert p.state == FAILED and p.reason == NO_BLINK
    assert "blink" in describe(p.reason)


def test_blink_before_the_run_does_not_count():
    """A blink by whoever sat there before the agreeing run began is not a blink of the holder."""
    v = Verifier("alice", VerifyParams(frames=5, timeout_s=10))
    v.observe(Observation(t=0.0, faces=1, distance=0.9, other=0.3, blinks=1))  # someone else blinked
    p = None
    blinks = 1
    for i in range(10):
        p = v.observe(Observation(t=0.1 + i * 0.1, blinks=blinks, **GOOD))
    assert p.state == PENDING and not p.blinked


def test_any_bad_frame_resets_the_run_and_the_blink():
    v = Verifier("alice", VerifyParams(frames=5))
    feed(v, 4, blink_at=1, **GOOD)
    p = v.observe(Observation(t=0.5, faces=2, distance=0.3, other=0.8, blinks=1))
    assert p.agreeing == 0 and p.reason == SEVERAL_FACES and not p.blinked
    p = v.observe(Observation(t=0.6, faces=0, blinks=1))
    assert p.reason == NO_FACE


def test_stranger_fails_as_not_the_account_holder():
    v = Verifier("alice", VerifyParams(mismatch_frames=5))
    p = feed(v, 4, faces=1, distance=0.85, other=0.4)
    assert p.state == PENDING and p.reason == NOT_HOLDER
    p = v.observe(Observation(t=1.0, faces=1, distance=0.85, other=0.4))
    assert p.state == FAILED and p.reason == NOT_HOLDER and describe(p.reason) == "not the account holder"


def test_margin_rule_of_match_py():
    """Close to the claimed person but as close to someone else: not agreeing (same margin as match.py)."""
    v = Verifier("alice", VerifyParams(margin=0.05))
    assert not v.agrees(Observation(0, 1, distance=0.40, other=0.42))
    assert v.agrees(Observation(0, 1, distance=0.40, other=0.46))
    assert v.agrees(Observation(0, 1, distance=0.40, other=math.inf))
    assert not v.agrees(Observation(0, 1, distance=0.59, other=math.inf))


def test_timeouts_name_the_last_problem():
    for kw, reason in (({"faces": 0}, NO_FACE), ({"faces": 3}, SEVERAL_FACES)):
        v = Verifier("alice", VerifyParams(timeout_s=2))
        feed(v, 10, **kw)
        assert v.tick(2.5).reason == reason and v.progress.state == FAILED
    v = Verifier("alice", VerifyParams(timeout_s=2, frames=50))
    feed(v, 5, dt=0.3, blink_at=2, **GOOD)  # agreeing, but too slow to reach 50 frames
    assert v.tick(2.0).reason == TIMED_OUT


def test_not_enrolled_fails_at_once():
    v = Verifier("nobody", enrolled=False)
    assert v.progress.state == FAILED and v.progress.reason == NOT_ENROLLED


def test_progress_dict_and_cancel():
    v = Verifier("alice", VerifyParams(frames=3))
    d = feed(v, 2, **GOOD).to_dict()
    assert d["state"] == PENDING and d["agreeing"] == 2 and d["needed"] == 3 and d["message"] == ""
    assert v.cancel().state == FAILED


@pytest.mark.parametrize("bad", [dict(frames=0), dict(frames=301), dict(timeout_s=0.5), dict(accept_distance=0),
                                 dict(accept_distance=2.1), dict(margin=-0.1), dict(margin=1.1), dict(mismatch_frames=0)])
def test_params_are_validated(bad):
    with pytest.raises(ValueError):
        VerifyParams(**bad)
