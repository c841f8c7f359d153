"""Fair share of the recognizer's frames: the rate it tells each edge, and an edge that keeps to it (real sockets)."""
from __future__ import annotations

import shutil
import threading
import time

import pytest

from recognizer.server.pacing import FairShare, PacingParams
from shared import protocol
from shared.pacing import Pacer, rate_from_peer
from tests.conftest import REPO


def test_pacer_spaces_sends_from_a_faster_camera_to_the_rate() -> None:
    pacer = Pacer(10.0)
    sent, t = 0, 0.0
    while t < 10.0:  # a 30 fps camera for 10 s: a frame goes whenever the pacer allows
        if pacer.wait_s(t) == 0:
            pacer.sent(t)
            sent += 1
        t += 1 / 30
    assert 98 <= sent <= 101  # 10 a second on average, not 7.5 (every 4th frame) nor 15 (every 2nd)
    pacer.sent(100.0)  # late by far: no burst to catch up
    assert pacer.wait_s(100.0) == pytest.approx(0.1)
    assert Pacer(0).wait_s(5.0) == 0.0


@pytest.mark.parametrize("value", [None, "10", True, -3, 0, float("nan")])
def test_an_unusable_rate_from_the_peer_means_no_limit(value) -> None:
    assert rate_from_peer(value) == 0.0
    assert rate_from_peer(1e9) == 240.0


def test_fair_share_splits_the_measured_capacity_among_stations() -> None:
    share = FairShare(PacingParams(station_fps=12, max_fps=30, utilisation=0.9, warmup_frames=5), cores=2)
    assert share.rate(16) == 12  # not measured yet: the planned rate
    for _ in range(50):
        share.frame_cost(0.010)  # 10 ms of CPU a frame: 2 cores x 0.9 -> 180 frames/s
    assert share.capacity_fps() == pytest.approx(180)
    assert share.rate(1) == 30  # one desk: as fast as a camera needs
    assert share.rate(16) == pytest.approx(11.2)
    assert share.rate(32) == pytest.approx(5.6)  # overloaded: everyone the same share, nobody races
    assert sum(share.rate(n) * n for n in (8, 16, 32)) / 3 <= 180


def test_the_encoder_processes_cpu_counts_in_what_a_frame_costs() -> None:
    """A re-check of each face every 30 frames in the encoder processes (80 ms each) is part of a frame's cost: the
    stations are told a share of what the machine serves, not of what their threads alone would."""
    threads_only = FairShare(PacingParams(warmup_frames=5), cores=2)
    with_encoder = FairShare(PacingParams(warmup_frames=5), cores=2)
    for i in range(90):
        threads_only.frame_cost(0.010)
        if i % 30 == 0:
            with_encoder.helper_cost(0.080)
        with_encoder.frame_cost(0.010)
    assert threads_only.cost_ms == pytest.approx(10.0)
    assert with_encoder.cost_ms == pytest.approx(10.0 + 3 * 80 / 90, rel=0.02)
    assert with_encoder.rate(16) < threads_only.rate(16)


def test_welcome_and_result_carry_the_rate_and_an_old_peer_is_unaffected() -> None:
    assert protocol.welcome("rec", 2, 5.0, 12.5).header["max_fps"] == 12.5
    assert "max_fps" not in protocol.welcome("rec", 2, 5.0).header  # unlimited: not said, as before


def test_a_real_edge_keeps_to_the_rate_the_real_recognizer_tells_it(tmp_path, sample_index_dir) -> None:
    """Recognizer capped at 6 frames/s per station, edge camera at ~30 fps: the edge sends ~6 a second, skipping
    the rest (the camera's own rate, measured in the same test, is the baseline)."""
    from edge.camera import CaptureThread, VideoFileSource
    from edge.frames import LatestFrame
    from edge.link import RecognizerLink
    from edge.link_state import LinkSettings
    from recognizer.app import RecognizerApp, RecognizerSettings
    from recognizer.server.stations import ServerConfig
    from recognizer.vision.detect import EngineConfig
    from recognizer.station.pipeline import PipelineConfig

    clip = REPO / "samples" / "hamilton_clip.mp4"  # the shipped demo clip, played at its own ~30 fps
    shutil.copytree(sample_index_dir, tmp_path / "encodings")
    app = RecognizerApp(RecognizerSettings(
        server=ServerConfig(host="127.0.0.1", port=0, token="t", station_fps=5, max_station_fps=6),
        engine=EngineConfig(detector="hog"), pipeline=PipelineConfig(liveness=False), index_dir=tmp_path / "encodings", known_faces=tmp_path / "kf",
        workers=1,
    ))
    app.start()
    cond = threading.Condition()
    raw, annotated = LatestFrame(cond), LatestFrame(cond)
    stop = threading.Event()
    camera = CaptureThread(VideoFileSource(str(clip)), raw, stop)
    camera.start()
    link = RecognizerLink(LinkSettings(port=app.server.address[1], station="desk-1", login="alice", token="t"),
                          raw, annotated)
    link.start()
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and link.status()["results"] < 25:  # past the server's warm-up
            time.sleep(0.05)
        first, seq0, t0 = link.status(), raw.latest().seq, time.monotonic()
        time.sleep(4.0)
        last, seq1, t1 = link.status(), raw.latest().seq, time.monotonic()
    finally:
        link.stop()
        stop.set()
        camera.join(5)
        app.stop()
    assert last["max_fps"] == 6.0  # the recognizer's word reached the edge
    camera_fps = (seq1 - seq0) / (t1 - t0)
    sent_fps = (last["frames_sent"] - first["frames_sent"]) / (t1 - t0)
    assert camera_fps > 2.5 * 6  # the camera offered far more than it was allowed to send
    assert 0.6 * 6 <= sent_fps <= 1.15 * 6, (sent_fps, camera_fps)
    assert last["frames_skipped"] > last["frames_sent"]
