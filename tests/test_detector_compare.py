"""bench.detector_compare: its scoring cores, and that it exits cleanly where mediapipe is not installed."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench.detector_compare import MESH_LEFT_EYE, MESH_RIGHT_EYE, count_scorer, ear6, mesh_ear, one_face_scorer, \
    separation, with_cnn
from recognizer.liveness.blinks import eye_aspect_ratio

REPO = Path(__file__).resolve().parents[1]


def test_ear6_is_the_products_ear() -> None:
    eye = np.array([(0, 5), (3, 2), (7, 2), (10, 5), (7, 8), (3, 8)], float)
    assert ear6(eye) == pytest.approx(eye_aspect_ratio(eye)) == pytest.approx(0.6)


def test_mesh_ear_reads_both_eyes_by_their_indices() -> None:
    points = np.zeros((468, 2))
    for idx in (MESH_RIGHT_EYE, MESH_LEFT_EYE):
        points[list(idx)] = [(0, 5), (3, 4), (7, 4), (10, 5), (7, 6), (3, 6)]
    assert mesh_ear(points) == pytest.approx(0.2)


def test_scorers_count_as_bench_recall_does() -> None:
    box = (0, 10, 10, 0)
    assert count_scorer([2, 3])([[box] * 3, [box]]) == {"recall": 3 / 5, "found": "3/5", "extra": 1}
    assert one_face_scorer([[box], [], [box, box]]) == {"recall": 2 / 3, "found": "2/3", "extra": 1}


def test_separation_auc_and_cnn_union() -> None:
    s = separation([0.30, 0.32, 0.20], [0.15, 0.20])
    assert s["auc"] == pytest.approx((2 * 2 + 1 + 0.5) / 6)
    a, b = (0, 10, 10, 0), (0, 110, 10, 100)
    assert with_cnn([[a]], [[(1, 11, 11, 1), b]]) == [[a, b]]


@pytest.mark.skipif(importlib.util.find_spec("mediapipe") is not None, reason="mediapipe is installed here")
def test_without_mediapipe_it_says_so_and_exits_0() -> None:
    run = subprocess.run([sys.executable, "-m", "bench.detector_compare"], cwd=REPO, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0 and "mediapipe is not installed" in run.stdout
