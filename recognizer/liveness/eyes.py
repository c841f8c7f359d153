"""Eye patches from dlib's 68 landmarks and the CEW eye-state CNN, run in plain numpy.

The network (LeNet-style, 24x24 grayscale, trained by ``recognizer.tools.train_eyes`` with Keras) is
shipped as ``recognizer/models/eye_state.npz`` + ``eye_state.json``; inference here is im2col +
matrix products over every eye of a frame at once (~0.1 ms for 2 eyes), so the recognizer never
imports TensorFlow. ``SmallCNN`` is the generic runner, also used by ``recognizer.tools.antispoof``.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import cv2
import numpy as np

log = logging.getLogger(__name__)

MODELS_DIR = Path(__file__).resolve().parents[1] / "models"
EYE_MODEL = MODELS_DIR / "eye_state.json"
PATCH = 24               # CEW patch side, pixels
PATCH_SCALE = 1.7        # patch side / eye width (corner to corner); matches CEW's framing
RIGHT_EYE = slice(36, 42)
LEFT_EYE = slice(42, 48)


class ModelFileError(RuntimeError):
    """A shipped model file is missing, corrupt or of an unknown architecture."""


def _eye_patch(gray: np.ndarray, eye: np.ndarray, out: int = PATCH, scale: float = PATCH_SCALE) -> np.ndarray:
    """One upright out x out crop centred on an eye (6 points), side = scale * eye width."""
    c = eye.mean(axis=0)
    d = eye[3] - eye[0]
    width = float(np.hypot(d[0], d[1]))
    side = max(scale * width, 4.0)
    angle = math.degrees(math.atan2(d[1], d[0]))
    factor = side / out  # source pixels per patch pixel
    # Cut a local ROI first: blurring / warping the whole frame would cost milliseconds.
    r = int(math.ceil(side * 0.75)) + 2
    x0, y0 = int(c[0]) - r, int(c[1]) - r
    h, w = gray.shape[:2]
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x0 + 2 * r, w), min(y0 + 2 * r, h)
    if sx1 <= sx0 or sy1 <= sy0:  # eye entirely outside the frame
        return np.zeros((out, out), np.uint8)
    roi = cv2.copyMakeBorder(gray[sy0:sy1, sx0:sx1], sy0 - y0, y0 + 2 * r - sy1, sx0 - x0, x0 + 2 * r - sx1,
                             cv2.BORDER_REPLICATE)  # edge-replicate what fell outside the frame
    if factor > 1.5:  # anti-alias before shrinking, like CEW's downsampled crops
        roi = cv2.GaussianBlur(roi, (0, 0), 0.45 * factor)
    m = cv2.getRotationMatrix2D((float(c[0] - x0), float(c[1] - y0)), angle, 1.0 / factor)
    m[0, 2] += out / 2 - (c[0] - x0)
    m[1, 2] += out / 2 - (c[1] - y0)
    return cv2.warpAffine(roi, m, (out, out), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def extract_eye_patches(gray: np.ndarray, landmarks68: np.ndarray) -> np.ndarray:
    """Both eyes as a (2, 24, 24) uint8 array (image-left eye first), rotated level, CEW framing."""
    if gray.ndim != 2 or gray.dtype != np.uint8:
        raise ValueError(f"need a 2-D uint8 grayscale frame, got {gray.dtype} {gray.shape}")
    pts = np.asarray(landmarks68, dtype=np.float64)
    if pts.shape != (68, 2):
        raise ValueError(f"need dlib's 68 landmarks as a (68, 2) array, got shape {pts.shape}")
    return np.stack([_eye_patch(gray, pts[RIGHT_EYE]), _eye_patch(gray, pts[LEFT_EYE])])


def standardize(patches: np.ndarray) -> np.ndarray:
    """Per-patch zero mean / unit std float32 (N, H, W, 1): removes lighting and contrast."""
    x = np.asarray(patches, dtype=np.float32)
    if x.ndim == 2:
        x = x[None]
    mean = x.mean(axis=(1, 2), keepdims=True)
    std = x.std(axis=(1, 2), keepdims=True)
    return ((x - mean) / np.maximum(std, 4.0))[..., None]


# ---------------------------------------------------------------- numpy CNN runner


def _conv2d(x: np.ndarray, k: np.ndarray, b: np.ndarray, padding: str) -> np.ndarray:
    """NHWC conv, stride 1, kernel (kh, kw, cin, cout), via a strided im2col view and one matmul."""
    kh, kw = k.shape[:2]
    if padding == "same":
        x = np.pad(x, ((0, 0), (kh // 2, (kh - 1) // 2), (kw // 2, (kw - 1) // 2), (0, 0)))
    win = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(1, 2))  # N,H',W',C,kh,kw
    n, ho, wo, c = win.shape[:4]
    cols = win.transpose(0, 1, 2, 4, 5, 3).reshape(n * ho * wo, kh * kw * c)
    return (cols @ k.reshape(kh * kw * c, -1) + b).reshape(n, ho, wo, -1)


def _maxpool(x: np.ndarray, s: int) -> np.ndarray:
    n, h, w, c = x.shape
    h2, w2 = h // s, w // s
    return x[:, :h2 * s, :w2 * s].reshape(n, h2, s, w2, s, c).max(axis=(2, 4))


_ACT = {
    "linear": lambda x: x,
    "relu": lambda x: np.maximum(x, 0.0),
    "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-np.clip(x, -60, 60))),
}


class SmallCNN:
    """A small Keras-exported CNN (conv / maxpool / flatten / dense layers) evaluated in numpy."""

    def __init__(self, layers: List[Dict[str, Any]], weights: Dict[str, np.ndarray], manifest: Dict[str, Any]):
        self.layers = layers
        self.w = weights
        self.manifest = manifest

    @classmethod
    def load(cls, manifest_path: Union[str, Path]) -> "SmallCNN":
        """Read `<name>.json` and the `.npz` it names; check its SHA-256 and layer types."""
        manifest_path = Path(manifest_path)
        try:
            manifest = json.loads(manifest_path.read_text())
            npz_path = manifest_path.with_name(manifest["weights"])
            blob = npz_path.read_bytes()
        except (OSError, ValueError, KeyError) as exc:
            raise ModelFileError(f"cannot read model {manifest_path}: {exc}") from exc
        if hashlib.sha256(blob).hexdigest() != manifest.get("sha256"):
            raise ModelFileError(f"{npz_path} does not match the SHA-256 in {manifest_path}")
        with np.load(npz_path, allow_pickle=False) as z:
            weights = {k: z[k].astype(np.float32) for k in z.files}
        layers = manifest.get("layers", [])
        for layer in layers:
            kind = layer.get("type")
            if kind not in ("conv", "maxpool", "flatten", "dense"):
                raise ModelFileError(f"{manifest_path}: unknown layer type {kind!r}")
            if kind in ("conv", "dense"):
                if layer.get("activation", "linear") not in _ACT:
                    raise ModelFileError(f"{manifest_path}: unknown activation {layer.get('activation')!r}")
                for suffix in ("kernel", "bias"):
                    if f"{layer['name']}/{suffix}" not in weights:
                        raise ModelFileError(f"{npz_path}: missing {layer['name']}/{suffix}")
        log.info("loaded %s (%s)", manifest_path.name, manifest.get("description", ""))
        return cls(layers, weights, manifest)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Run the network on a float32 NHWC batch; returns the last layer's output (N, units)."""
        for layer in self.layers:
            kind = layer["type"]
            if kind == "conv":
                x = _ACT[layer.get("activation", "linear")](
                    _conv2d(x, self.w[layer["name"] + "/kernel"], self.w[layer["name"] + "/bias"],
                            layer.get("padding", "valid")))
            elif kind == "maxpool":
                x = _maxpool(x, int(layer.get("size", 2)))
            elif kind == "flatten":
                x = x.reshape(x.shape[0], -1)
            else:
                x = _ACT[layer.get("activation", "linear")](
                    x @ self.w[layer["name"] + "/kernel"] + self.w[layer["name"] + "/bias"])
        return x


@dataclass
class EyeStateModel:
    """Open/closed eye classifier on 24x24 patches; P(closed) > 0.5 means closed."""

    net: SmallCNN

    @classmethod
    def load(cls, path: Optional[Union[str, Path]] = None) -> "EyeStateModel":
        """Load the manifest at `path` (default: the shipped recognizer/models/eye_state.json)."""
        net = SmallCNN.load(path or EYE_MODEL)
        if net.manifest.get("input") != [PATCH, PATCH, 1] or net.manifest.get("output") != "p_closed":
            raise ModelFileError(f"{path or EYE_MODEL} is not an eye-state model (input {net.manifest.get('input')})")
        return cls(net)

    def predict_closed(self, patches: Union[np.ndarray, Sequence[np.ndarray]]) -> np.ndarray:
        """P(eye closed) for each (24, 24) grayscale patch, as an (n,) float array."""
        x = np.asarray(patches)
        if x.ndim == 2:
            x = x[None]
        if x.ndim != 3 or x.shape[1:] != (PATCH, PATCH):
            raise ValueError(f"need (n, {PATCH}, {PATCH}) eye patches, got shape {x.shape}")
        if len(x) == 0:
            return np.zeros(0, np.float32)
        return self.net.forward(standardize(x))[:, 0]
