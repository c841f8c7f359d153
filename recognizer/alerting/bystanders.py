"""Bystanders blurred in stored evidence: the saved frame keeps sharp only the faces an alert is about.

The alert rules keep evidence opaque; the monitor hands them an `Evidence` (the raw frame, the annotated one the
live feed showed, and the faces found on it) and renders it into the JPEG that is stored when an event is sent,
so only frames that become evidence cost a decode and an encode (the live feed is never touched). Whose face
stays sharp, by alert type (`subjects`):

- unknown_face: the unknown faces; wrong_person: the known faces that are not the logged-in evaluator;
  no_blink / eyes_closed: the faces liveness flagged;
- multiple_faces: every face (the alert is about all of them being there);
- camera_tamper and no_face: none (the alert is about the camera or an empty desk).

Every other face is pixelated (blocks of `BLOCK_FRACTION` of its box, then smoothed), box and name label
included, and drawn with a grey box marked "bystander" so a reviewer sees that someone was there.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Sequence

from shared.results import KNOWN, UNKNOWN, FaceResult

log = logging.getLogger(__name__)

BLOCK_FRACTION = 1 / 6  # a blurred face becomes about 6x6 blocks: no detector or person can tell who it is
MARGIN = 0.3  # share of the box added around it (hair, the label under the box)
GREY = (160, 160, 160)


def subjects(kind: str, faces: Sequence[FaceResult], login: str) -> list[FaceResult]:
    """The faces alert type `kind` is about (kept sharp in its evidence); see the module doc."""
    if kind == "unknown_face":
        return [f for f in faces if f.state == UNKNOWN]
    if kind == "wrong_person":
        return [f for f in faces if f.state == KNOWN and f.name and f.name != login]
    if kind in ("no_blink", "eyes_closed"):
        return [f for f in faces if f.liveness == kind]
    if kind == "multiple_faces":
        return list(faces)
    return []


@dataclass(frozen=True)
class Evidence:
    """A frame that may become evidence: rendered per alert type by `render` (the rules never look inside)."""

    raw: bytes  # the frame as the edge sent it
    # as the live feed showed it (boxes and names), or a function drawing it (the reply carried no picture)
    annotated: "bytes | Callable[[], bytes]"
    faces: tuple[FaceResult, ...]
    login: str = ""
    blur: bool = True  # the setting (--blur-bystanders)

    def render(self, kind: str) -> bytes:
        """The JPEG to store for an alert of type `kind`: `annotated` as it is when nobody else is on it (or blurring
        is off), else the raw frame with the bystanders pixelated and the subjects annotated."""
        keep = subjects(kind, self.faces, self.login)
        others = [f for f in self.faces if f not in keep]
        if not self.blur or not others:
            return self.feed()
        try:
            return blurred(self.raw, keep, others)
        except ValueError as exc:  # an undecodable frame: stored as the live feed showed it, and said
            log.warning("evidence of a %s alert not blurred: %s", kind, exc)
            return self.feed()

    def feed(self) -> bytes:
        """The frame as the live feed showed it (drawn now when the reply carried no picture)."""
        return self.annotated() if callable(self.annotated) else self.annotated


def blurred(jpeg: bytes, keep: Sequence[FaceResult], others: Sequence[FaceResult], quality: int = 90) -> bytes:
    """`jpeg` with every face in `others` pixelated and marked, and the faces in `keep` annotated as on the feed."""
    import cv2
    import numpy as np

    from shared.drawing import draw_faces
    from shared.jpeg import encode_jpeg

    bgr = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError("the frame does not decode as an image")
    h, w = bgr.shape[:2]
    regions = []
    for face in others:
        top, right, bottom, left = face.box
        dy, dx = int((bottom - top) * MARGIN), int((right - left) * MARGIN)
        y0, y1, x0, x1 = max(0, top - dy), min(h, bottom + dy), max(0, left - dx), min(w, right + dx)
        if y1 - y0 < 2 or x1 - x0 < 2:
            continue
        region = bgr[y0:y1, x0:x1]
        bw = max(1, round((right - left) * BLOCK_FRACTION))  # block size in pixels
        small = cv2.resize(region, (max(1, (x1 - x0) // bw), max(1, (y1 - y0) // bw)), interpolation=cv2.INTER_AREA)
        bgr[y0:y1, x0:x1] = cv2.resize(small, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
        regions.append((x0, y0, x1, y1))
    draw_faces(bgr, keep)
    scale = max(0.4, min(1.0, w / 900))
    (tw, th), base = cv2.getTextSize("bystander", cv2.FONT_HERSHEY_DUPLEX, scale, 1)
    for x0, y0, x1, y1 in regions:
        cv2.rectangle(bgr, (x0, y0), (x1 - 1, y1 - 1), GREY, 2)
        y = min(y1 + th + base + 6, h - 1)  # the label under the box, as the feed's labels are
        cv2.rectangle(bgr, (x0, y - th - base - 6), (x0 + tw + 8, y), GREY, cv2.FILLED)
        cv2.putText(bgr, "bystander", (x0 + 4, y - base - 2), cv2.FONT_HERSHEY_DUPLEX, scale, (255, 255, 255), 1,
                    cv2.LINE_AA)
    return encode_jpeg(bgr, quality)
