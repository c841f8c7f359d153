"""Pure tests of EAR, the blink state machine and the per-track liveness states (no images)."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recognizer.liveness.blinks import (
    BlinkDetector,
    FaceLiveness,
    LivenessParams,
    LivenessState,
    eye_aspect_ratio,
)

FPS = 25.0


def eye(ear: float, width: float = 30.0, x0: float = 0.0, y0: float = 0.0) -> np.ndarray:
    """Six dlib-ordered eye points whose EAR is exactly `ear`."""
    h = ear * width  # each vertical pair spans h -> (h + h) / (2 * width) = ear
    return np.array([[x0, y0], [x0 + width / 3, y0 - h / 2], [x0 + 2 * width / 3, y0 - h / 2],
                     [x0 + width, y0], [x0 + 2 * width / 3, y0 + h / 2], [x0 + width / 3, y0 + h / 2]])


def face(ear: float) -> np.ndarray:
    """68 landmarks with both eyes at the given EAR (other points are irrelevant to EAR)."""
    pts = np.zeros((68, 2))
    pts[36:42] = eye(ear, x0=100, y0=120)
    pts[42:48] = eye(ear, x0=160, y0=120)
    return pts


GRAY = np.zeros((240, 320), np.uint8)


def ear_trace(seconds: float, blinks_at=(), closed_frames: int = 3, open_ear: float = 0.30,
              closed_ear: float = 0.12, noise: float = 0.01, seed: int = 0):
    """(t, ear) samples at 25 fps with blinks of `closed_frames` frames starting at the given times."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(int(seconds * FPS)):
        t = i / FPS
        closed = any(b <= t < b + closed_frames / FPS for b in blinks_at)
        out.append((t, (closed_ear if closed else open_ear) + rng.normal(0, noise)))
    return out


def test_ear_of_known_geometry():
    assert eye_aspect_ratio(eye(0.3)) == pytest.approx(0.3)
    assert eye_aspect_ratio(eye(0.1, width=5)) == pytest.approx(0.1)


def test_ear_rejects_bad_input():
    with pytest.raises(ValueError, match="6"):
        eye_aspect_ratio(np.zeros((5, 2)))
    with pytest.raises(ValueError, match="degenerate"):
        eye_aspect_ratio(np.zeros((6, 2)))


@settings(max_examples=50, deadline=None)
@given(st.floats(0.01, 1.0), st.floats(2.0, 500.0), st.floats(-1e3, 1e3), st.floats(0.1, 10.0))
def test_ear_is_scale_and_translation_invariant(ear, width, shift, scale):
    pts = eye(ear, width=width)
    assert eye_aspect_ratio(pts * scale + shift) == pytest.approx(eye_aspect_ratio(pts), rel=1e-6)


@pytest.mark.parametrize("kwargs, message", [
    ({"blink_timeout_s": 0}, "blink_timeout_s"),
    ({"first_blink_timeout_s": -1}, "first_blink_timeout_s"),
    ({"ear_closed_ratio": 0.9, "ear_reopen_ratio": 0.8}, "ear_closed_ratio"),
    ({"cnn_closed_prob": 0.2, "cnn_open_prob": 0.3}, "cnn_open_prob"),
    ({"min_blink_frames": 0}, "min_blink_frames"),
    ({"min_blink_frames": 5, "max_blink_frames": 4}, "max_blink_frames"),
    ({"max_blink_s": 3.0, "long_closure_s": 2.0}, "long_closure_s"),
    ({"baseline_quantile": 0}, "baseline_quantile"),
])
def test_params_validated(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LivenessParams(**kwargs)


def run_detector(trace, params=LivenessParams()):
    det = BlinkDetector.for_ear(params)
    events = [e for t, v in trace if (e := det.update(t, v)) is not None]
    return det, events


def test_detector_counts_blinks_and_not_noise():
    det, events = run_detector(ear_trace(10, blinks_at=(2.0, 5.0, 8.0)))
    assert det.blinks == 3
    assert all(e.is_blink for e in events)
    assert [round(e.start_t, 2) for e in events] == [2.0, 5.0, 8.0]
    det, _ = run_detector(ear_trace(10, noise=0.015))
    assert det.blinks == 0


def test_detector_adapts_to_a_low_open_ear():
    # Narrow eyes / glasses: open EAR 0.20 is below the classic fixed 0.2 threshold region.
    det, _ = run_detector(ear_trace(10, blinks_at=(3.0, 6.0), open_ear=0.20, closed_ear=0.10, noise=0.005))
    assert det.blinks == 2
    det, _ = run_detector(ear_trace(10, open_ear=0.20, noise=0.005))
    assert det.blinks == 0


def test_long_closure_is_not_a_blink():
    det, events = run_detector(ear_trace(8, blinks_at=(2.0,), closed_frames=int(3 * FPS)))
    assert det.blinks == 0
    assert len(events) == 1 and not events[0].is_blink
    assert events[0].end_t - events[0].start_t == pytest.approx(3.0, abs=0.1)


def test_slow_closure_bounded_by_frames():
    params = LivenessParams(max_blink_frames=4)
    det, _ = run_detector(ear_trace(6, blinks_at=(2.0,), closed_frames=6), params)
    assert det.blinks == 0
    det, _ = run_detector(ear_trace(6, blinks_at=(2.0,), closed_frames=4), params)
    assert det.blinks == 1


def test_no_decision_before_baseline():
    det = BlinkDetector.for_ear(LivenessParams(baseline_min_samples=5))
    for i, v in enumerate([0.3, 0.1, 0.3, 0.1, 0.3, 0.3]):
        assert det.update(i / FPS, v) is None
    assert det.blinks == 0 and det.baseline is not None


def test_gap_drops_an_open_closure():
    det, _ = run_detector(ear_trace(2))
    det.update(2.0, 0.1)
    assert det.closed
    assert det.update(5.0, 0.3) is None  # reopened after a 3 s gap: not a blink, no event
    assert det.blinks == 0


def test_time_going_backwards_is_an_error():
    det = BlinkDetector.for_ear(LivenessParams())
    det.update(1.0, 0.3)
    with pytest.raises(ValueError, match="backwards"):
        det.update(0.5, 0.3)


def test_cnn_detector_uses_probability_thresholds():
    det = BlinkDetector.for_cnn(LivenessParams())
    probs = [0.05] * 20 + [0.9, 0.95, 0.8] + [0.05] * 10 + [0.4] * 3 + [0.05] * 5
    for i, p in enumerate(probs):
        det.update(i / FPS, 1.0 - p)
    assert det.blinks == 1


def feed(live: FaceLiveness, track: int, trace):
    return [live.update(track, t, face(v), GRAY) for t, v in trace]


def test_states_unknown_live_no_blink():
    params = LivenessParams(first_blink_timeout_s=5.0, blink_timeout_s=3.0)
    live = FaceLiveness(params, method="ear")
    res = feed(live, 1, ear_trace(4))
    assert res[-1].state is LivenessState.UNKNOWN and res[-1].blinks == 0
    assert res[-1].seconds_since_blink is None
    assert res[-1].ear == pytest.approx(0.30, abs=0.05) and res[-1].closed_prob is None
    res = feed(live, 1, [(t + 4, v) for t, v in ear_trace(2)])
    assert res[-1].state is LivenessState.NO_BLINK  # 6 s > first_blink_timeout_s, never blinked
    res = feed(live, 1, [(t + 6, v) for t, v in ear_trace(2, blinks_at=(0.5,))])
    assert res[-1].state is LivenessState.LIVE and res[-1].blinks == 1
    assert res[-1].seconds_since_blink == pytest.approx(1.96 - 0.64, abs=0.01)  # last sample - first open frame
    res = feed(live, 1, [(t + 8, v) for t, v in ear_trace(3)])
    assert res[-1].state is LivenessState.NO_BLINK and res[-1].blinks == 1  # > blink_timeout_s since


def test_eyes_closed_state():
    live = FaceLiveness(LivenessParams(long_closure_s=1.5), method="ear")
    res = feed(live, 7, ear_trace(5, blinks_at=(2.0,), closed_frames=int(2 * FPS)))
    states = [r.state for r in res]
    assert LivenessState.EYES_CLOSED in states
    assert states[-1] is LivenessState.UNKNOWN and res[-1].blinks == 0


def test_tracks_are_independent_and_forgettable():
    live = FaceLiveness(LivenessParams(), method="ear")
    feed(live, 1, ear_trace(4, blinks_at=(2.0,)))
    res2 = feed(live, 2, ear_trace(4))
    assert res2[-1].blinks == 0 and len(live) == 2
    live.forget(1)
    live.forget(99)
    assert len(live) == 1
    res1 = feed(live, 1, [(t + 4, v) for t, v in ear_trace(1)])
    assert res1[-1].blinks == 0  # a forgotten track starts again


def test_bad_method_and_missing_model():
    with pytest.raises(ValueError, match="ear, cnn, both"):
        FaceLiveness(LivenessParams(), method="svm")
    assert FaceLiveness(LivenessParams()).eye_model is not None  # default "both" loads the shipped model


def test_bad_landmarks_rejected():
    live = FaceLiveness(LivenessParams())
    with pytest.raises(ValueError, match="68"):
        live.update(1, 0.0, np.zeros((5, 2)), GRAY)
