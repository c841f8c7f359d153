"""RecognizerLink against a fake recognizer on a real loopback socket, fed by the real clip."""
from __future__ import annotations

import statistics
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.camera import CaptureThread, VideoFileSource
from edge.config import EdgeConfig
from tests.edge.conftest import FakeRecognizer, make_link, wait_until
from tests.procs import free_port


@pytest.fixture
def camera(clip: Path, holders):
    """The real clip played at its own fps (~30) into the raw holder."""
    raw, _ = holders
    stop = threading.Event()
    thread = CaptureThread(VideoFileSource(str(clip)), raw, stop)
    thread.start()
    yield raw
    stop.set()
    thread.join(5)


def test_results_flow_and_annotated_frames_are_published(fake_recognizer: FakeRecognizer, camera, holders) -> None:
    raw, annotated = holders
    link = make_link(fake_recognizer, raw, annotated)
    link.start()
    try:
        assert wait_until(lambda: link.status()["results"] >= 20, 5)
        status = link.status()
        assert status["online"] and status["state"] == "online" and status["window"] == 2
        assert status["faces"][0]["name"] == "alice"
        assert status["fps"] > 10 and status["latency_ms"] is not None
        jpeg = annotated.latest().data
        assert cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR).shape == (360, 640, 3)
        assert fake_recognizer.hellos[0]["station"] == "desk-1" and fake_recognizer.hellos[0]["login"] == "alice"
        link.set_login("bob")
        assert wait_until(lambda: fake_recognizer.sessions == ["bob"], 2)
    finally:
        link.stop()
    assert link.status()["state"] == "offline" and not link.online


@pytest.mark.parametrize("server_window", [1, 4])
def test_slow_server_gets_bounded_in_flight_and_flat_latency(camera, holders, server_window: int) -> None:
    """Server 200 ms per frame, camera ~30 fps: frames are skipped, never queued; latency stays flat."""
    work_s = 0.2
    server = FakeRecognizer(delay_s=work_s, max_in_flight=server_window).start()
    raw, annotated = holders
    link = make_link(server, raw, annotated, max_in_flight=2)
    window = min(server_window, 2)
    latencies: list[float] = []
    max_in_flight = 0
    link.start()
    try:
        assert wait_until(lambda: link.online, 3)
        deadline = time.monotonic() + 3.5
        last = 0
        while time.monotonic() < deadline:
            frame = annotated.wait_for_frame(last, timeout=1)
            status = link.status()
            max_in_flight = max(max_in_flight, status["in_flight"])
            if frame is not None:
                last = frame.seq
                latencies.append(status["latency_ms"])
        status = link.status()
    finally:
        link.stop()
        server.kill()
    assert server.max_outstanding <= window and max_in_flight <= window
    assert status["frames_skipped"] > status["frames_sent"]  # the camera outran the server
    expected_fps = 1 / work_s
    assert 0.7 * expected_fps <= status["fps"] <= 1.2 * expected_fps
    steady = latencies[3:]
    assert len(steady) >= 8
    # Each frame waits at most for the ones ahead of it: ~window x work (+ capture age, encode, a loaded CI box).
    bound_ms = (window * work_s + 0.2) * 1000
    assert max(steady) < bound_ms, latencies
    half = len(steady) // 2
    assert statistics.mean(steady[half:]) < statistics.mean(steady[:half]) + 50  # no backlog growing


def test_wrong_token_is_refused_with_its_reason_and_retried_slowly(holders) -> None:
    server = FakeRecognizer(token="the-right-one").start()
    raw, annotated = holders
    raw.publish(np.zeros((48, 64, 3), np.uint8))
    link = make_link(server, raw, annotated)
    link.start()
    try:
        assert wait_until(lambda: link.status()["state"] == "refused", 3)
        status = link.status()
        assert "wrong token for station desk-1" in status["reason"] and not status["online"]
        time.sleep(1.5)
        assert len(server.hellos) == 1  # no hammering: the next try is seconds away
        answer = link.enrol("Alice")
        assert not answer["ok"] and answer["code"] == "offline" and "wrong token" in answer["reason"]
    finally:
        link.stop()
        server.kill()


def test_reconnects_with_backoff_after_the_server_dies_and_returns(camera, holders) -> None:
    server = FakeRecognizer().start()
    raw, annotated = holders
    link = make_link(server, raw, annotated)
    link.start()
    try:
        assert wait_until(lambda: link.status()["results"] >= 5, 5)
        server.kill()
        assert wait_until(lambda: link.status()["state"] == "offline", 3)
        assert link.offline_reason()
        time.sleep(2.0)  # a few refused attempts: 0.5 s, 1 s, 2 s apart
        offline = link.status()
        assert offline["state"] == "offline" and not offline["online"]
        assert "connection refused" in offline["reason"]  # stays offline with its reason between tries
        before = offline["results"]
        restarted = time.monotonic()
        server.start()  # same port
        assert wait_until(lambda: link.status()["results"] >= before + 5, 8)
        reconnect_s = time.monotonic() - restarted
        assert link.status()["connects"] == 2
    finally:
        link.stop()
        server.kill()
    assert reconnect_s < 6.0  # the back-off after ~2 s offline is at most ~2.4 s (then 4.8 s)


def test_silent_server_is_declared_dead_after_three_heartbeats(camera, holders) -> None:
    server = FakeRecognizer(answer=False, heartbeat_s=0.3).start()
    raw, annotated = holders
    link = make_link(server, raw, annotated)
    link.start()
    try:
        assert wait_until(lambda: link.online, 3)
        assert wait_until(lambda: "no answer from the recognizer" in (link.offline_reason() or ""), 3)
    finally:
        link.stop()
        server.kill()


def test_enrol_round_trip(fake_recognizer: FakeRecognizer, camera, holders) -> None:
    raw, annotated = holders
    link = make_link(fake_recognizer, raw, annotated)
    link.start()
    try:
        assert wait_until(lambda: link.online, 3)
        answer = link.enrol("  Ada Lovelace ", timeout=5)
        crop = answer.pop("crop")
        assert crop[:2] == b"\xff\xd8"  # the enrolled face's JPEG, passed on for the page
        top, right, bottom, left = answer.pop("box")
        assert 0 <= left < right and 0 <= top < bottom
        assert answer == {"ok": True, "reason": "enrolled", "name": "Ada Lovelace", "count": 1}
        assert fake_recognizer.enrols[0]["name"] == "Ada Lovelace"
    finally:
        link.stop()


def test_hello_carries_the_station_credential_and_enrol_the_grant(fake_recognizer: FakeRecognizer, camera,
                                                                   holders) -> None:
    raw, annotated = holders
    link = make_link(fake_recognizer, raw, annotated, credential="desk-1-own-token")
    link.start()
    try:
        assert wait_until(lambda: link.online, 3)
        assert fake_recognizer.hellos[0]["credential"] == "desk-1-own-token"
        assert link.enrol("Ada", timeout=5, grant="the-dashboards-grant")["ok"]
        assert fake_recognizer.enrols[0]["grant"] == "the-dashboards-grant" and "by" not in fake_recognizer.enrols[0]
    finally:
        link.stop()
    assert EdgeConfig(dashboard_token="t" * 30).link_settings().credential == "t" * 30


def test_enrol_times_out_when_the_server_does_not_answer(camera, holders) -> None:
    server = FakeRecognizer(enrol_answer=False).start()
    raw, annotated = holders
    link = make_link(server, raw, annotated)
    link.start()
    try:
        assert wait_until(lambda: link.online, 3)
        started = time.monotonic()
        answer = link.enrol("Ada", timeout=0.5)
        assert time.monotonic() - started < 1.5
        assert not answer["ok"] and answer["code"] == "timeout" and "did not answer" in answer["reason"]
    finally:
        link.stop()
        server.kill()


@pytest.mark.parametrize("name", ["", "../etc", "a/b", "x" * 65])
def test_enrol_rejects_bad_names_before_sending(fake_recognizer: FakeRecognizer, holders, name: str) -> None:
    raw, annotated = holders
    link = make_link(fake_recognizer, raw, annotated)
    answer = link.enrol(name)
    assert not answer["ok"] and answer["code"] == "invalid_name" and answer["reason"]
    assert fake_recognizer.enrols == []


def test_enrol_offline_answers_at_once(holders) -> None:
    raw, annotated = holders
    link = make_link(free_port(), raw, annotated)
    link.start()
    try:
        assert wait_until(lambda: link.status()["state"] == "offline", 3)
        answer = link.enrol("Ada")
        assert not answer["ok"] and answer["code"] == "offline"
        assert "recognizer offline" in answer["reason"] and "refused" in answer["reason"]
    finally:
        started = time.monotonic()
        link.stop()
        assert time.monotonic() - started < 2  # stop() interrupts the back-off wait
