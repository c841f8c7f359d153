"""JPEG encoding of BGR frames, optionally shrunk first: the project's one encoder (the edge's frames and pages,
the recognizer's annotated replies, enrolment photos and crops)."""
from __future__ import annotations

import cv2
import numpy as np


def shrink(frame: np.ndarray, max_width: int = 0) -> np.ndarray:
    """The frame shrunk (aspect kept) to `max_width` pixels when wider; the frame itself otherwise (0: never)."""
    if max_width and frame.shape[1] > max_width:
        height = max(1, round(frame.shape[0] * max_width / frame.shape[1]))
        frame = cv2.resize(frame, (max_width, height), interpolation=cv2.INTER_AREA)
    return frame


def encode_jpeg(frame: np.ndarray, quality: int = 80, max_width: int = 0) -> bytes:
    """JPEG bytes of a BGR frame at `quality` (1-100), first shrunk (aspect kept) to `max_width` pixels when wider.

    `max_width` 0: never shrunk. ValueError when OpenCV cannot encode the frame.
    """
    frame = shrink(frame, max_width)
    ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("OpenCV could not JPEG-encode the frame")
    return buf.tobytes()
