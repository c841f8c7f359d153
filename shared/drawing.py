"""Drawing results onto frames: a box per face, with name (or "unknown"), and liveness. The recognizer draws its
annotated replies with it, and an edge that asked for RESULTs without a picture draws the same boxes itself
(docs/protocol.md, `annotate`), so its page looks the same either way."""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from shared.results import KNOWN, FaceResult

# BGR colours by identity state
COLOURS = {"known": (60, 180, 60), "unknown": (40, 40, 220), "pending": (0, 200, 230), "unsure": (0, 150, 255)}
STATE_TEXT = {"unknown": "unknown", "unsure": "not sure", "pending": "..."}
LIVENESS_TEXT = {"live": "live", "no_blink": "no blink!", "eyes_closed": "eyes closed"}


def label_for(face: FaceResult) -> str:
    """Text drawn under a face: the name (known) or the verdict, plus liveness once it says something."""
    state = face.state
    text = face.name if state == KNOWN and face.name else STATE_TEXT.get(state, "...")
    live = LIVENESS_TEXT.get(face.liveness)
    if live is not None:
        text += f" [{live}]"
    return text


def draw_faces(bgr: np.ndarray, faces: Sequence[FaceResult]) -> np.ndarray:
    """Draw each face's box and label onto `bgr` in place and return it."""
    h, w = bgr.shape[:2]
    scale = max(0.4, min(1.0, w / 900))
    for face in faces:
        top, right, bottom, left = face.box
        colour = COLOURS.get(face.state, COLOURS["pending"])
        if face.liveness in ("no_blink", "eyes_closed"):
            colour = (0, 0, 255) if face.liveness == "no_blink" else (0, 140, 255)
        cv2.rectangle(bgr, (left, top), (right, bottom), colour, 2)
        text = label_for(face)
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_DUPLEX, scale, 1)
        y = min(bottom + th + base + 6, h - 1)
        cv2.rectangle(bgr, (left, y - th - base - 6), (left + tw + 8, y), colour, cv2.FILLED)
        cv2.putText(bgr, text, (left + 4, y - base - 2), cv2.FONT_HERSHEY_DUPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return bgr
