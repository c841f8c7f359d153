"""Liveness on real data from ../shared/data (skipped when absent): CEW accuracy and real blink clips."""
from __future__ import annotations

import json

import numpy as np
import pytest

from recognizer.liveness.blinks import FaceLiveness, LivenessParams
from recognizer.liveness.eyes import EyeStateModel

pytestmark = pytest.mark.data


@pytest.fixture(scope="module")
def eye_model() -> EyeStateModel:
    return EyeStateModel.load()


def test_cew_heldout_accuracy(data, eye_model):
    from recognizer.tools.train_eyes import group_split, load_cew

    x, y, groups = load_cew(data / "eyes")
    test = group_split(groups, 0.2, int(eye_model.net.manifest["seed"]))
    acc = np.mean((eye_model.predict_closed(x[test]) > 0.5) == (y[test] > 0.5))
    assert acc >= 0.93, f"held-out accuracy {acc:.3f}"


@pytest.fixture(scope="module")
def clip_landmarks(data):
    """Per clip: [(frame, t, gray, points)] for the annotated blink clips, via dlib."""
    from bench.liveness import Landmarker

    lm = Landmarker()
    ann = json.loads((data / "blink" / "annotations.json").read_text())
    clips = {}
    for name, meta in ann.items():
        if name.startswith("_"):
            continue
        frames = [fr for fr in lm.frames(data / "blink" / name) if fr.points is not None]
        clips[name] = (frames, [tuple(e["closed"]) for e in meta["events"] if e["type"] == "blink"])
    return clips


@pytest.mark.parametrize("method, min_found", [("ear", 3), ("cnn", 2), ("both", 2)])
def test_blink_clips(clip_landmarks, eye_model, method, min_found):
    from bench.liveness import score

    found = invented = 0
    for frames, events in clip_landmarks.values():
        live = FaceLiveness(LivenessParams(), eye_model, method=method)
        reported, before = [], 0
        for fr in frames:
            res = live.update(0, fr.t, fr.points, fr.gray)
            if res.blinks > before:
                reported.append(fr.index)
            before = res.blinks
        f, _, inv = score(reported, events)
        found, invented = found + f, invented + inv
    assert invented == 0
    assert found >= min_found
