"""The edge draws the boxes itself (HELLO `annotate: false`): a real edge link and a real recognizer on 127.0.0.1.

The recognizer then sends RESULTs without a picture, and the edge's page shows the frame it sent with the same
boxes and labels the recognizer would have drawn (docs/protocol.md, "The picture")."""
from __future__ import annotations

import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.camera import CaptureThread, VideoFileSource
from edge.frames import LatestFrame
from edge.link import LinkSettings, RecognizerLink
from tests.conftest import FIXTURES
from tests.edge.conftest import wait_until


@pytest.fixture(scope="module")
def still_clip(tmp_path_factory) -> Path:
    """A 2 s, 30 fps clip of one enrolled person's photo, standing still (every frame the same picture)."""
    image = cv2.imread(str(FIXTURES / "obama_probe.jpg"))
    h, w = image.shape[:2]
    image = cv2.resize(image, (640, int(round(h * 640 / w))) if w != 640 else (w, h))
    path = tmp_path_factory.mktemp("still") / "obama.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (image.shape[1], image.shape[0]))
    for _ in range(60):
        writer.write(image)
    writer.release()
    return path


def _page_picture(recognizer, clip: Path, edge_draws: bool) -> tuple[np.ndarray, bool, bytes]:
    """The edge page's picture once the face is named, whether the recognizer's session sends pictures, and the
    last RESULT picture size the edge got (b"": none)."""
    cond = threading.Condition()
    raw, annotated = LatestFrame(cond), LatestFrame(cond)
    stop = threading.Event()
    camera = CaptureThread(VideoFileSource(str(clip)), raw, stop)
    station = f"desk-draws-{edge_draws}"
    host, port = recognizer.server.address
    link = RecognizerLink(LinkSettings(host=host, port=port, station=station, token="secret", max_width=640,
                                       edge_draws=edge_draws), raw, annotated)
    camera.start()
    link.start()
    try:
        def named() -> bool:
            frame = annotated.latest()
            return frame is not None and bool(frame.meta) and frame.meta[0].name == "barack_obama"

        assert wait_until(named, 60), f"no named face on the page (edge_draws={edge_draws})"
        session = next(s for s in recognizer.server.stations() if s.station == station)
        frame = annotated.latest()
        return cv2.imdecode(np.frombuffer(frame.data, np.uint8), cv2.IMREAD_COLOR), session.annotate, frame.data
    finally:
        link.stop()
        stop.set()
        camera.join(5)


def test_the_edge_draws_the_boxes_itself_and_its_page_looks_the_same(recognizer, still_clip) -> None:
    theirs, annotated_by_recognizer, _ = _page_picture(recognizer, still_clip, edge_draws=False)
    ours, annotated_by_recognizer_2, _ = _page_picture(recognizer, still_clip, edge_draws=True)
    assert annotated_by_recognizer and not annotated_by_recognizer_2  # the HELLO said so; the server kept it
    assert ours.shape == theirs.shape
    # the same frame with the same box and label: only JPEG noise between them (the recognizer drew on its
    # decoded copy of the sent JPEG, the edge on the frame before it was sent)
    raw = cv2.imread(str(FIXTURES / "obama_probe.jpg"))
    raw = cv2.resize(raw, (ours.shape[1], ours.shape[0]))
    drawn = np.abs(theirs.astype(int) - raw.astype(int)).max(axis=2) > 60  # where the recognizer drew
    assert drawn.mean() > 0.005  # a box and a label are there
    assert np.abs(ours.astype(int) - theirs.astype(int))[drawn].mean() < 25
    assert np.abs(ours.astype(int) - theirs.astype(int)).mean() < 4
