"""shared.jpeg: the edge's one JPEG encoder."""
from __future__ import annotations

import cv2
import numpy as np

from shared.jpeg import encode_jpeg


def test_encode_jpeg_shrinks_to_max_width() -> None:
    frame = np.full((360, 640, 3), 128, np.uint8)
    small = cv2.imdecode(np.frombuffer(encode_jpeg(frame, 70, max_width=320), np.uint8), cv2.IMREAD_COLOR)
    assert small.shape == (180, 320, 3)
    same = cv2.imdecode(np.frombuffer(encode_jpeg(frame, 70, max_width=0), np.uint8), cv2.IMREAD_COLOR)
    assert same.shape == (360, 640, 3)
