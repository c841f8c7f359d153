"""Fair share of the recognizer's frames: the rate it tells each edge, and an edge that keeps to it (real sockets)."""
from __future__ import annotations

import os
import shutil
import threading
import time

import pytest

from recognizer.server.pacing import ControlParams, FairShare, PacingParams
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
    share = FairShare(PacingParams(station_fps=12, max_fps=30, utilisation=0.9, warmup_frames=5, prior_cost_ms=25),
                      cores=2)
    # not measured yet: the share of 25 ms a frame (2 cores x 0.9 -> 72 frames/s), one desk at a camera's rate, never
    # under the planned rate (the control cuts it within seconds where it is too much)
    assert (share.rate(1), share.rate(4), share.rate(16)) == (30, 18, 12)
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


# -- the share follows what is served (ShareController, stop 24) --

class _Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _share(cores: float = 2.0, cost_s: float = 0.010, **control) -> tuple[FairShare, _Clock]:
    """A FairShare whose CPU model says 2 cores x 0.9 / 10 ms = 180 frames/s (the ceiling), on a test clock."""
    clock = _Clock()
    share = FairShare(PacingParams(station_fps=5, max_fps=30, warmup_frames=5, control=ControlParams(**control)),
                      cores=cores, clock=clock)
    for _ in range(20):
        share.frame_cost(cost_s)
    return share, clock


def _serve(share: FairShare, clock: _Clock, stations: int, capacity_fps: float, seconds: float,
           camera_fps: float = 30.0) -> list[float]:
    """A machine that serves `capacity_fps` frames/s in all (whatever the CPU model says): every 100 ms each station
    sends what its told share (and its camera) lets it; a station sending more than its even part of the capacity
    is served that part, and its frames find the next one waiting (backlogged). Returns the share told each 100 ms."""
    told, credit = [], [0.0] * stations
    for _ in range(int(seconds * 10)):
        rate = share.rate(stations)
        told.append(rate)
        offered = min(rate, camera_fps)
        served = min(offered, capacity_fps / stations)
        backlogged = offered > 0.97 * capacity_fps / stations  # the window fills: the next frame already waits
        for i in range(stations):
            credit[i] += served * 0.1
            while credit[i] >= 1:
                credit[i] -= 1
                share.frame_served(i, 0.08, backlogged)
        clock.t += 0.1
    return told


def test_the_share_falls_to_what_is_served_when_the_cores_are_not_all_ours() -> None:
    """The CPU model says 180 frames/s (11.2 per station at 16) but other programs leave 53: after a few seconds each
    station is told about its part of what is served, and it stays there without swinging wildly."""
    share, clock = _share()
    fair = 53 / 16
    told = _serve(share, clock, 16, 53, 60)
    assert told[0] == pytest.approx(11.2)  # the CPU model's share at first
    settled = told[150:]  # after 15 s
    assert 0.75 * fair <= min(settled) and max(settled) <= 1.15 * fair, (min(settled), max(settled), fair)
    assert sum(settled) / len(settled) >= 0.85 * fair  # the capacity is still used, not given away
    swings = sum(1 for a, b in zip(settled, settled[1:]) if abs(b - a) > 0.3 * fair)
    assert swings <= len(settled) / 20  # a cut now and then, not a swing every second


def test_the_share_rises_back_to_the_ceiling_when_the_cores_come_back() -> None:
    share, clock = _share()
    _serve(share, clock, 16, 53, 30)
    assert share.rate(16) < 4.0
    told = _serve(share, clock, 16, 400, 30)  # the other programs ended: more than the CPU model says
    assert told[-1] == pytest.approx(11.2)  # back at the ceiling, never above it
    assert max(told) <= 11.2
    back = next(i for i, r in enumerate(told) if r >= 11.2) / 10
    assert back <= 20, back


def test_stations_with_slower_cameras_do_not_pull_the_share_down() -> None:
    """Cameras at 5 frames/s while each station may send 11.2: served less than told, but never backlogged, so the
    share stays at the ceiling (stop 22's attempt compared served with told and ratcheted down)."""
    share, clock = _share()
    told = _serve(share, clock, 16, 180, 30, camera_fps=5)
    assert min(told) == pytest.approx(11.2)


def test_one_stall_is_not_a_cut_and_a_switched_off_controller_keeps_the_cpu_model() -> None:
    share, clock = _share()
    for i in range(16):  # one second where every frame found the next waiting (a new face's encodings waited for)
        share.frame_served(i, 0.5, True)
    clock.t += 1.0
    share.rate(16)
    clock.t += 1.0
    assert share.rate(16) == pytest.approx(11.2)
    off, clock = _share(enabled=False)
    told = _serve(off, clock, 16, 53, 20)
    assert min(told) == pytest.approx(11.2)


def test_every_station_is_told_the_same_share_and_a_cut_is_at_most_half() -> None:
    """One rate for all (fair by construction); a cut never more than halves it in one step, so one bad second
    cannot throttle every desk to a trickle."""
    share, clock = _share()
    told = _serve(share, clock, 16, 10, 20)  # far too little: 0.6 frames/s per station
    drops = [b / a for a, b in zip(told, told[1:]) if b < a]
    assert drops and min(drops) >= 0.5 - 1e-6
    assert told[-1] == pytest.approx(0.6, abs=0.2)


def test_a_new_stations_start_does_not_cut_the_share() -> None:
    """Every desk's first seconds wait for its face's first encodings (backlogged, slow): not counted."""
    share, clock = _share()
    for nth in range(1, 6):
        for i in range(16):
            share.frame_served(i, 2.0, True, nth=nth)
        clock.t += 1.0
        share.rate(16)
    assert share.rate(16) == pytest.approx(11.2)
