"""Passive anti-spoof: a small CNN saying whether a face crop is a live face or a replay/print.

Inference in numpy from ``recognizer/models/antispoof.npz`` + ``antispoof.json`` (trained by
``recognizer.tools.train_antispoof`` on one person's live/phone-replay crops). It generalises poorly to
other people and cameras (see docs/liveness.md), so the pipeline keeps it off by default.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from recognizer.liveness.eyes import MODELS_DIR, ModelFileError, SmallCNN

log = logging.getLogger(__name__)

SPOOF_MODEL = MODELS_DIR / "antispoof.json"
SIDE = 64          # network input side, pixels
MARGIN = 0.1       # crop_face: box grown by this share of its size on each side


def crop_face(bgr: np.ndarray, box: Tuple[int, int, int, int], margin: float = MARGIN) -> np.ndarray:
    """The face box (left, top, right, bottom) grown by `margin` per side, clipped to the frame."""
    left, top, right, bottom = box
    dx, dy = int((right - left) * margin), int((bottom - top) * margin)
    h, w = bgr.shape[:2]
    crop = bgr[max(top - dy, 0):min(bottom + dy, h), max(left - dx, 0):min(right + dx, w)]
    if crop.size == 0:
        raise ValueError(f"face box {box} lies outside the {w}x{h} frame")
    return crop


def prepare(crops: Sequence[np.ndarray]) -> np.ndarray:
    """BGR crops of any size -> float32 (n, 64, 64, 3), per-crop standardized."""
    out = np.empty((len(crops), SIDE, SIDE, 3), np.float32)
    for i, c in enumerate(crops):
        if c.ndim != 3 or c.shape[2] != 3 or c.size == 0:
            raise ValueError(f"need BGR face crops (h, w, 3), got shape {c.shape}")
        out[i] = cv2.resize(c, (SIDE, SIDE), interpolation=cv2.INTER_AREA)
    mean = out.mean(axis=(1, 2, 3), keepdims=True)
    std = out.std(axis=(1, 2, 3), keepdims=True)
    return (out - mean) / np.maximum(std, 4.0)


@dataclass
class SpoofModel:
    """Real-vs-replay classifier; P(real) < 0.5 means replay/print."""

    net: SmallCNN

    @classmethod
    def load(cls, path: Optional[Union[str, Path]] = None) -> "SpoofModel":
        """Load the manifest at `path` (default: the shipped recognizer/models/antispoof.json)."""
        net = SmallCNN.load(path or SPOOF_MODEL)
        if net.manifest.get("output") != "p_real":
            raise ModelFileError(f"{path or SPOOF_MODEL} is not an anti-spoof model")
        return cls(net)

    def predict_real(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """P(live face) for each BGR face crop, as an (n,) float array."""
        if len(crops) == 0:
            return np.zeros(0, np.float32)
        return self.net.forward(prepare(crops))[:, 0]
