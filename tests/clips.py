"""Test clips made from real footage: a still photo as a camera pointed at it gives it, a real blink clip with
one closure held for seconds. Each frame carries a little sensor-like noise so no frame is a byte-for-byte copy
(a real camera never gives two identical frames; identical frames are the frozen-camera rule's business)."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import cv2
import numpy as np


def _noisy(img: np.ndarray, rng: np.random.Generator, sigma: float) -> np.ndarray:
    if sigma <= 0:
        return img
    return np.clip(img.astype(np.int16) + rng.normal(0, sigma, img.shape).round().astype(np.int16), 0, 255).astype(np.uint8)


def write_clip(frames: Iterable[np.ndarray], out: Path, fps: float) -> Path:
    """Write BGR frames as an mp4 (mp4v) clip; returns `out`."""
    writer = None
    for frame in frames:
        if writer is None:
            h, w = frame.shape[:2]
            writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
        writer.write(frame)
    if writer is None:
        raise ValueError("no frames to write")
    writer.release()
    return out


def still_clip(photo: Path, out: Path, seconds: float, fps: float = 10, width: int = 480, noise: float = 2.0) -> Path:
    """A photo held in front of the camera for `seconds`."""
    img = cv2.imread(str(photo))
    if img is None:
        raise ValueError(f"cannot read {photo}")
    h, w = img.shape[:2]
    scale = width / max(w, h)
    img = cv2.resize(img, (int(w * scale) // 2 * 2, int(h * scale) // 2 * 2), interpolation=cv2.INTER_AREA)
    rng = np.random.default_rng(0)
    return write_clip((_noisy(img, rng, noise) for _ in range(int(seconds * fps))), out, fps)


def read_all(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames


def held_closure_clip(blink_clip: Path, closed_frame: int, hold_s: float, out: Path, fps: float = 25,
                      noise: float = 1.5) -> Path:
    """The real clip with frame `closed_frame` (eyes closed) held for `hold_s` seconds in its place."""
    frames = read_all(blink_clip)
    rng = np.random.default_rng(1)
    held = [_noisy(frames[closed_frame], rng, noise) for _ in range(int(hold_s * fps))]
    return write_clip(frames[:closed_frame] + held + frames[closed_frame + 1:], out, fps)
