"""Bystanders blurred in stored evidence: a real photo of two people (tests/fixtures/two_people.jpg), one of them the
unknown face an alert is about, the other a known bystander. In the evidence the alert monitor emits, the detector
no longer finds the bystander and the sharpness of their face falls far below the same region of the raw frame
(the baseline, measured here), while the subject's face is found, as sharp, and encodes to the same person. The
live feed's annotated frame is not touched; with the setting off the evidence is that frame as it was."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from recognizer.alerting.bystanders import subjects
from recognizer.alerting.monitor import AlertMonitor
from recognizer.alerting.rules import AlertThresholds
from recognizer.station.types import FrameOutcome, StationSnapshot
from shared.drawing import draw_faces
from recognizer.vision.detect import FaceEngine
from shared.jpeg import encode_jpeg
from shared.results import KNOWN, UNKNOWN, FaceResult

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "two_people.jpg"


@pytest.fixture(scope="module")
def engine() -> FaceEngine:
    return FaceEngine()


def _rgb(jpeg: bytes) -> np.ndarray:
    return cv2.cvtColor(cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def _sharpness(rgb: np.ndarray, box: tuple[int, int, int, int], inset: float = 0.2) -> float:
    """Variance of the Laplacian inside `box` shrunk by `inset` (clear of any drawn rectangle)."""
    top, right, bottom, left = box
    dy, dx = int((bottom - top) * inset), int((right - left) * inset)
    gray = cv2.cvtColor(rgb[top + dy:bottom - dy, left + dx:right - dx], cv2.COLOR_RGB2GRAY)
    return float(cv2.Laplacian(gray, cv2.CV_64F).var())


def _overlaps(a: tuple, b: tuple) -> bool:
    """Whether box `a` covers at least half of box `b` (top, right, bottom, left)."""
    h = min(a[2], b[2]) - max(a[0], b[0])
    w = min(a[1], b[1]) - max(a[3], b[3])
    return h > 0 and w > 0 and h * w >= 0.5 * (b[2] - b[0]) * (b[1] - b[3])


def _evidence(engine: FaceEngine, blur: bool) -> tuple[bytes, bytes, list[FaceResult], bytes]:
    bgr = cv2.imread(str(FIXTURE))
    raw = encode_jpeg(bgr, 95)
    boxes = engine.detect(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    assert len(boxes) == 2, boxes  # the baseline: both faces are found on the raw frame
    faces = [FaceResult(boxes[0], 1, UNKNOWN, distance=0.8), FaceResult(boxes[1], 2, KNOWN, "joe_biden", 0.3, 0.9)]
    annotated = encode_jpeg(draw_faces(bgr.copy(), faces), 90)
    events: list = []
    monitor = AlertMonitor(AlertThresholds(unknown_after_s=0.0, enabled=frozenset({"unknown_face"})), events.append,
                           clock=lambda: 1.8e9, blur_bystanders=blur)
    status = StationSnapshot(1, "desk-01", "alice", "127.0.0.1", 1.8e9)
    outcome = FrameOutcome(faces, annotated)
    monitor.on_frame(status, outcome, raw)
    opened = [e for e in events if e.state == "open"]
    assert len(opened) == 1 and isinstance(opened[0].image, bytes), events
    assert outcome.annotated is annotated  # the live feed's frame is the one the pipeline made
    return raw, opened[0].image, faces, annotated


def test_bystander_blurred_subject_intact(engine: FaceEngine) -> None:
    raw, stored, faces, annotated = _evidence(engine, blur=True)
    subject, bystander = faces
    raw_rgb, ev_rgb = _rgb(raw), _rgb(stored)
    found = engine.detect(ev_rgb)
    assert any(_overlaps(b, subject.box) for b in found), found
    assert not any(_overlaps(b, bystander.box) or _overlaps(bystander.box, b) for b in found), found
    base_sub, base_by = _sharpness(raw_rgb, subject.box), _sharpness(raw_rgb, bystander.box)
    ev_sub, ev_by = _sharpness(ev_rgb, subject.box), _sharpness(ev_rgb, bystander.box)
    assert ev_by < 0.05 * base_by, (ev_by, base_by)  # pixelated: far below its own baseline
    assert ev_sub > 0.6 * base_sub, (ev_sub, base_sub)  # the subject: as sharp as on the raw frame (JPEG aside)
    def moved(rgb: np.ndarray) -> float:  # how far the subject's encoding moved from the raw frame's
        return float(np.linalg.norm(engine.encode(rgb, [subject.box])[0] - engine.encode(raw_rgb, [subject.box])[0]))

    # the subject's face still says who it is: moved no more than on the live feed's frame (its drawn box, the
    # baseline) and far below the 0.6 that tells people apart
    assert moved(ev_rgb) <= moved(_rgb(annotated)) + 0.03 and moved(ev_rgb) < 0.3, (moved(ev_rgb), moved(_rgb(annotated)))


def test_setting_off_stores_the_frame_as_the_feed_showed_it(engine: FaceEngine) -> None:
    raw, stored, faces, _ = _evidence(engine, blur=False)
    found = engine.detect(_rgb(stored))
    assert all(any(_overlaps(b, f.box) for b in found) for f in faces), found  # both faces, as on the feed


def test_whose_face_stays_sharp_by_alert_type() -> None:
    box = (0, 10, 10, 0)
    unknown, login, other = FaceResult(box, 1, UNKNOWN), FaceResult(box, 2, KNOWN, "alice"), FaceResult(box, 3, KNOWN, "bob")
    spoof = replace(other, track=4, liveness="no_blink")
    faces = [unknown, login, other, spoof]
    assert subjects("unknown_face", faces, "alice") == [unknown]
    assert subjects("wrong_person", faces, "alice") == [other, spoof]
    assert subjects("no_blink", faces, "alice") == [spoof]
    assert subjects("multiple_faces", faces, "alice") == faces
    assert subjects("camera_tamper", faces, "alice") == [] and subjects("no_face", [], "alice") == []


def test_a_reply_without_a_picture_still_gives_the_annotated_frame_as_evidence(engine: FaceEngine) -> None:
    """An edge that draws its own boxes gets RESULTs without a picture: the frame is drawn when it becomes evidence,
    and only then (frames that no alert keeps are never drawn)."""
    bgr = cv2.imread(str(FIXTURE))
    raw = encode_jpeg(bgr, 95)
    boxes = engine.detect(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    faces = [FaceResult(b, i + 1, UNKNOWN, distance=0.8) for i, b in enumerate(boxes)]  # both are subjects
    drawn = []

    def draw() -> bytes:
        drawn.append(1)
        return encode_jpeg(draw_faces(bgr.copy(), faces), 90)

    events: list = []
    thresholds = AlertThresholds(unknown_after_s=0.0, enabled=frozenset({"unknown_face"}))
    monitor = AlertMonitor(thresholds, events.append, clock=lambda: 1.8e9)
    status = StationSnapshot(1, "desk-01", "alice", "127.0.0.1", 1.8e9, annotate=False)
    monitor.on_frame(status, FrameOutcome(faces, b"", draw=draw), raw)
    (opened,) = [e for e in events if e.state == "open"]
    assert opened.image == encode_jpeg(draw_faces(bgr.copy(), faces), 90) and drawn == [1]
    quiet = AlertMonitor(AlertThresholds(enabled=frozenset({"camera_tamper"})), events.append, clock=lambda: 1.8e9)
    quiet.on_frame(status, FrameOutcome(faces, b"", draw=draw), raw)
    assert drawn == [1]  # no alert kept that frame: it was never drawn


def test_an_edge_that_draws_its_own_boxes_still_gets_evidence(engine: FaceEngine) -> None:
    """A reply without a picture (the edge draws): the annotated frame is made only when it becomes evidence."""
    bgr = cv2.imread(str(FIXTURE))
    raw = encode_jpeg(bgr, 95)
    boxes = engine.detect(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    drawn: list[bytes] = []
    for faces in ([FaceResult(boxes[0], 1, UNKNOWN)], [FaceResult(b, i, UNKNOWN) for i, b in enumerate(boxes)]):
        def draw(faces: list = faces) -> bytes:
            drawn.append(encode_jpeg(draw_faces(bgr.copy(), faces), 90))
            return drawn[-1]

        events: list = []
        monitor = AlertMonitor(AlertThresholds(unknown_after_s=0.0, enabled=frozenset({"unknown_face"})),
                               events.append, clock=lambda: 1.8e9)
        monitor.on_frame(StationSnapshot(1, "desk-01", "alice", "127.0.0.1", 1.8e9),
                         FrameOutcome(faces, b"", draw=draw), raw)
        (opened,) = [e for e in events if e.state == "open"]
        assert isinstance(opened.image, bytes) and opened.image == drawn[-1], type(opened.image)
    assert len(drawn) == 2  # once per frame that became evidence
