"""Eye patches, the numpy CNN runner, the shipped eye-state and anti-spoof models."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest

from recognizer.liveness.eyes import (
    EYE_MODEL,
    EyeStateModel,
    ModelFileError,
    _conv2d,
    _maxpool,
    extract_eye_patches,
)
from recognizer.tools.antispoof import SpoofModel, crop_face
from tests.liveness.conftest import REPO


@pytest.fixture(scope="module")
def eye_model() -> EyeStateModel:
    return EyeStateModel.load()


def naive_conv(x, k, b, padding):
    kh, kw = k.shape[:2]
    if padding == "same":
        x = np.pad(x, ((0, 0), (kh // 2, (kh - 1) // 2), (kw // 2, (kw - 1) // 2), (0, 0)))
    n, h, w, _ = x.shape
    out = np.zeros((n, h - kh + 1, w - kw + 1, k.shape[3]))
    for i in range(out.shape[1]):
        for j in range(out.shape[2]):
            out[:, i, j] = np.einsum("nhwc,hwcd->nd", x[:, i:i + kh, j:j + kw], k) + b
    return out


@pytest.mark.parametrize("padding", ["valid", "same"])
def test_conv_matches_naive(padding):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3, 9, 8, 2)).astype(np.float32)
    k = rng.normal(size=(3, 3, 2, 4)).astype(np.float32)
    b = rng.normal(size=4).astype(np.float32)
    np.testing.assert_allclose(_conv2d(x, k, b, padding), naive_conv(x, k, b, padding), rtol=1e-4, atol=1e-4)


def test_maxpool():
    x = np.arange(2 * 5 * 4 * 1, dtype=np.float32).reshape(2, 5, 4, 1)
    out = _maxpool(x, 2)
    assert out.shape == (2, 2, 2, 1)
    assert out[0, 0, 0, 0] == x[0, 1, 1, 0]


def test_shipped_models_small_and_not_pickled():
    for name in ("eye_state", "antispoof"):
        manifest = json.loads((EYE_MODEL.parent / f"{name}.json").read_text())
        npz = EYE_MODEL.parent / manifest["weights"]
        assert npz.stat().st_size < 2_000_000
        with np.load(npz, allow_pickle=False) as z:
            assert all(z[k].dtype == np.float32 for k in z.files)


def test_predict_closed_shapes(eye_model):
    assert eye_model.predict_closed(np.zeros((0, 24, 24), np.uint8)).shape == (0,)
    p = eye_model.predict_closed(np.full((5, 24, 24), 128, np.uint8))
    assert p.shape == (5,) and np.all((p >= 0) & (p <= 1))
    with pytest.raises(ValueError, match="24, 24"):
        eye_model.predict_closed(np.zeros((2, 32, 32)))


def test_corrupt_model_refused(tmp_path):
    for f in ("eye_state.json", "eye_state.npz"):
        shutil.copy(EYE_MODEL.parent / f, tmp_path / f)
    data = bytearray((tmp_path / "eye_state.npz").read_bytes())
    data[-40] ^= 0xFF
    (tmp_path / "eye_state.npz").write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="SHA-256"):
        EyeStateModel.load(tmp_path / "eye_state.json")
    with pytest.raises(ModelFileError, match="cannot read"):
        EyeStateModel.load(tmp_path / "missing.json")
    with pytest.raises(ModelFileError, match="not an eye-state"):
        EyeStateModel.load(EYE_MODEL.parent / "antispoof.json")


def synthetic_face_points(cx=160.0, cy=120.0, width=30.0, angle_deg=0.0):
    """68 points whose eyes are 6-point ellipses; other points sit at the centre (unused here)."""
    pts = np.full((68, 2), (cx, cy))
    a = np.radians(angle_deg)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    base = np.array([[0, 0], [1 / 3, -0.15], [2 / 3, -0.15], [1, 0], [2 / 3, 0.15], [1 / 3, 0.15]]) * width
    for sl, dx in ((slice(36, 42), -45.0), (slice(42, 48), 15.0)):
        pts[sl] = (base + (dx, 0)) @ rot.T + (cx, cy)
    return pts


def test_extract_eye_patches_geometry():
    gray = np.zeros((240, 320), np.uint8)
    pts = synthetic_face_points()
    for sl in (slice(36, 42), slice(42, 48)):  # paint each eye's bounding box white
        (x0, y0), (x1, y1) = pts[sl].min(0).astype(int), pts[sl].max(0).astype(int)
        gray[y0:y1 + 1, x0:x1 + 1] = 255
    patches = extract_eye_patches(gray, pts)
    assert patches.shape == (2, 24, 24) and patches.dtype == np.uint8
    for p in patches:  # the eye is centred and spans ~1/1.7 of the patch width
        cols = np.where(p[12] > 128)[0]
        assert abs((cols.min() + cols.max()) / 2 - 11.5) <= 1.5
        assert 10 <= cols.max() - cols.min() + 1 <= 18
    # a rotated face gives (nearly) the same upright patches
    rot = cv2.getRotationMatrix2D((160, 120), -20, 1.0)  # cv2 positive = counter-clockwise in image
    gray_r = cv2.warpAffine(gray, rot, (320, 240))
    pts_r = np.c_[pts, np.ones(68)] @ rot.T
    diff = np.abs(extract_eye_patches(gray_r, pts_r).astype(int) - patches.astype(int)).mean()
    assert diff < 20


def test_extract_eye_patches_edges_and_errors():
    gray = np.full((60, 60), 100, np.uint8)
    pts = synthetic_face_points(cx=5, cy=5)  # eyes partly / wholly outside the frame
    assert extract_eye_patches(gray, pts).shape == (2, 24, 24)
    with pytest.raises(ValueError, match="grayscale"):
        extract_eye_patches(np.zeros((60, 60, 3), np.uint8), pts)
    with pytest.raises(ValueError, match="68"):
        extract_eye_patches(gray, pts[:5])


def test_spoof_model_api():
    model = SpoofModel.load()
    crops = [np.full((120, 90, 3), 90, np.uint8), np.random.default_rng(0).integers(0, 255, (200, 160, 3), np.uint8)]
    p = model.predict_real(crops)
    assert p.shape == (2,) and np.all((p >= 0) & (p <= 1))
    assert model.predict_real([]).shape == (0,)
    frame = np.zeros((100, 100, 3), np.uint8)
    assert crop_face(frame, (10, 10, 50, 60)).shape == (60, 48, 3)
    with pytest.raises(ValueError, match="outside"):
        crop_face(frame, (200, 200, 250, 250))


def test_inference_does_not_import_tensorflow():
    code = ("import sys, numpy as np\n"
            "from recognizer.liveness.blinks import FaceLiveness, LivenessParams\n"
            "from recognizer.liveness.eyes import EyeStateModel\nfrom recognizer.tools.antispoof import SpoofModel\n"
            "m = EyeStateModel.load(); SpoofModel.load()\n"
            "FaceLiveness(LivenessParams(), m, method='both')\n"
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, 'TF imported'\n")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


def test_subject_keys():
    from recognizer.tools.train_eyes import subject_of  # no TensorFlow needed

    assert subject_of("Aaron_Guiel_0001_L.jpg") == "Aaron_Guiel"
    assert subject_of("closed_eye_0002.jpg_face_2_R.jpg") == "closed_eye_0002"
