"""The station session without sockets: real messages in, actions out (recognizer/station/session.py).

A real per-frame pipeline (dlib, the sample index, real JPEGs); the clocks are the test's own."""
from __future__ import annotations

import dataclasses

import pytest

from recognizer.app import RecognizerSettings, pipeline_factory
from recognizer.identity.index import IndexStore
from recognizer.station.pipeline import PipelineConfig
from recognizer.station.session import CameraChanged, Enrol, FrameProcessed, Send, StationSession
from recognizer.station.types import StationSnapshot
from recognizer.vision.detect import EngineConfig
from shared import protocol
from shared.protocol import MessageKind, ProtocolError
from tests.conftest import FIXTURES


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture()
def session(engine, sample_index_dir):
    settings = RecognizerSettings(engine=EngineConfig(detector="hog"), pipeline=PipelineConfig(liveness=False),
                                  index_dir=sample_index_dir)
    pipeline = pipeline_factory(settings, engine, engine, IndexStore(sample_index_dir))()
    mono, wall = Clock(100.0), Clock(1_700_000_000.0)
    hello = StationSnapshot(7, "desk-01", "alice", "127.0.0.1:5000", wall.t)
    return StationSession(hello, pipeline, clock=mono, wall=wall), mono, wall


PHOTO = (FIXTURES / "obama_probe.jpg").read_bytes()


def test_a_frame_is_observed_then_answered_and_the_snapshot_is_replaced(session) -> None:
    s, mono, wall = session
    before = s.snapshot
    actions = s.receive(protocol.frame(1, 5.0, PHOTO))
    assert [type(a) for a in actions] == [FrameProcessed, Send]
    processed, send = actions
    assert send.message.kind == MessageKind.RESULT and send.message.header["seq"] == 1 and send.message.payload
    assert len(send.message.header["faces"]) == 1
    assert processed.snapshot is s.snapshot and processed.jpeg == PHOTO
    assert (s.snapshot.frames, s.snapshot.last_frame_at, len(s.snapshot.faces)) == (1, wall.t, 1)
    assert before.frames == 0 and before.faces == ()  # what another thread holds never changes under it
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.snapshot.frames = 5  # type: ignore[misc]
    mono.t += 0.1
    s.receive(protocol.frame(2, 5.1, PHOTO))
    assert s.snapshot.fps == pytest.approx(10.0)


def test_a_corrupt_frame_is_answered_with_an_error_and_counted(session) -> None:
    s, _, _ = session
    actions = s.receive(protocol.frame(3, 1.0, PHOTO[:200]))
    assert len(actions) == 1 and actions[0].message.header["error"].startswith("bad_image")
    assert (s.snapshot.errors, s.snapshot.frames) == (1, 0)


def test_camera_lost_and_back(session) -> None:
    s, _, wall = session
    actions = s.receive(protocol.heartbeat(1.0, {"state": "lost", "error": "unplugged", "lost_s": 4}))
    assert [type(a) for a in actions] == [Send, CameraChanged]
    assert actions[0].message.kind == MessageKind.HEARTBEAT and actions[0].message.header["ts"] == 1.0
    lost = actions[1].snapshot
    assert (lost.camera, lost.camera_error, lost.camera_since, lost.fps) == ("lost", "unplugged", wall.t - 4, 0.0)
    assert s.receive(protocol.heartbeat(2.0, {"state": "lost", "error": "still"})) == [
        Send(protocol.heartbeat(2.0))]  # no change: observers hear nothing
    wall.t += 10
    actions = s.receive(protocol.frame(1, 3.0, PHOTO))  # a frame is the surest sign the camera is back
    assert [type(a) for a in actions] == [CameraChanged, FrameProcessed, Send]
    assert (actions[0].snapshot.camera, actions[0].snapshot.camera_since) == ("ok", wall.t)


def test_login_enrolment_and_messages_a_station_must_not_send(session) -> None:
    s, _, _ = session
    assert s.receive(protocol.session("bob")) == [] and s.snapshot.login == "bob"
    with pytest.raises(ProtocolError, match="SESSION"):
        s.receive(protocol.session("bad\nlogin"))
    enrol = protocol.enrol("r1", "carol", PHOTO)
    assert s.receive(enrol) == [Enrol(enrol)]  # the server's to decide (trust, disk)
    with pytest.raises(ProtocolError, match="unexpected WELCOME"):
        s.receive(protocol.welcome("x", 2, 5.0))


def test_a_sign_in_check_takes_the_frames_while_it_runs(session) -> None:
    s, _, _ = session
    assert s.receive(protocol.verify("v1", "barack_obama", 2, 30)) == []
    actions = s.receive(protocol.frame(1, 1.0, PHOTO))
    assert [a.message.kind for a in actions] == [MessageKind.RESULT, MessageKind.VERIFY_RESULT]
    assert "verify" in actions[0].message.header and s.snapshot.frames == 1
    # the sign-in check has its own liveness although this station runs without (--no-liveness)
    assert s.checks.run is not None and s.checks.run.liveness is not None
    cancelled = s.receive(protocol.verify_cancel("v1"))
    assert cancelled[0].message.header["reason"] == "cancelled"
    assert [type(a) for a in s.receive(protocol.frame(2, 2.0, PHOTO))] == [FrameProcessed, Send]
