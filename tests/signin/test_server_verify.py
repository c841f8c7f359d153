"""Sign-in face checks through a real recognizer on 127.0.0.1:0 with real photos and the bundled clip."""
from __future__ import annotations

import logging
import time

import cv2
import pytest

from shared import protocol
from shared.protocol import MessageKind
from tests.conftest import FIXTURES, SAMPLE_CLIP
from tests.test_server import connect

pytestmark = pytest.mark.timeout(120)


def clip_frames(n: int, start: int = 120) -> list[bytes]:
    """Frames of the bundled clip from `start` (HOG finds his face on frames 83-113 and 120-236)."""
    cap = cv2.VideoCapture(str(SAMPLE_CLIP))
    cap.set(cv2.CAP_PROP_POS_FRAMES, start)
    out = []
    while len(out) < n:
        ok, frame = cap.read()
        if not ok:
            break
        out.append(cv2.imencode(".jpg", frame)[1].tobytes())
    return out


def run_check(stream, identity: str, frames: list[bytes], needed: int = 3, timeout_s: float = 30.0) -> list[dict]:
    """Send VERIFY, then frames until the check is decided; return every VERIFY_RESULT header."""
    stream.send(protocol.verify("r1", identity, needed, timeout_s))
    answers: list[dict] = []
    for seq, jpeg in enumerate(frames, 1):
        stream.send(protocol.frame(seq, time.time(), jpeg))
        result = stream.recv()
        assert result.kind == MessageKind.RESULT and "verify" in result.header and result.payload
        answer = stream.recv()
        assert answer.kind == MessageKind.VERIFY_RESULT and answer.header["request_id"] == "r1"
        answers.append(answer.header)
        if answer.header["state"] != "pending":
            break
    return answers


def test_stranger_is_not_the_account_holder(recognizer):
    """The clip shows Lin-Manuel Miranda; checked against Barack Obama's account it fails at once."""
    stream, _ = connect(recognizer, station="desk-v1")
    answers = run_check(stream, "barack_obama", clip_frames(60))
    assert answers[-1]["state"] == "failed" and answers[-1]["reason"] == "not_account_holder", answers[-3:]
    stream.close()


def test_account_holder_agrees_frame_after_frame(recognizer):
    """The same clip against his own identity: frames agree (1:1, margin over the other three people)."""
    stream, _ = connect(recognizer, station="desk-v2")
    # frames 144-160: his face frontal enough that every frame is within 0.5 (earlier ones hover at 0.47-0.59)
    answers = run_check(stream, "lin_manuel_miranda", clip_frames(16, start=144), needed=200, timeout_s=60)
    assert max(a["agreeing"] for a in answers) >= 10, [(a["agreeing"], a["reason"], a["state"]) for a in answers]
    assert all(a["reason"] != "not_account_holder" for a in answers[-5:])
    # a new VERIFY replaces the running one; cancel ends it with "cancelled"
    stream.send(protocol.verify_cancel("r1"))
    answer = stream.recv()
    assert answer.kind == MessageKind.VERIFY_RESULT and answer.header["reason"] == "cancelled"
    # after the check the station's frames go through normal monitoring again (no "verify" in RESULT)
    stream.send(protocol.frame(99, time.time(), clip_frames(1)[0]))
    assert "verify" not in stream.recv().header
    stream.close()


def test_still_photo_never_passes(recognizer):
    """A still photo of an enrolled person agrees on every frame but never blinks: failed, no_blink."""
    photo = (FIXTURES / "obama_probe.jpg").read_bytes()
    stream, _ = connect(recognizer, station="desk-v3")
    stream.send(protocol.verify("r1", "barack_obama", 3, 1.0))
    answers = []
    for seq in range(1, 80):
        stream.send(protocol.frame(seq, time.time(), photo))
        # each message checked, so a failure says what came instead (once in a fresh suite run: the connection was
        # closed after an unread message; not reproduced in 7 runs of this file alone)
        result = stream.recv()
        assert result is not None and result.kind == MessageKind.RESULT, (seq, result and (result.kind, result.header))
        answer = stream.recv()
        assert answer is not None and answer.kind == MessageKind.VERIFY_RESULT, (
            seq, result.header, answer and (answer.kind, answer.header), answers[-3:])
        answers.append(answer.header)
        if answers[-1]["state"] != "pending":
            break
        time.sleep(0.05)
    assert answers[-1]["state"] == "failed" and answers[-1]["reason"] == "no_blink", answers[-3:]
    assert max(a["agreeing"] for a in answers) == 3
    stream.close()


def test_unknown_identity_and_bad_request(recognizer):
    stream, _ = connect(recognizer, station="desk-v4")
    stream.send(protocol.verify("r1", "nobody_enrolled", 3, 10))
    answer = stream.recv()
    assert answer.kind == MessageKind.VERIFY_RESULT and answer.header["reason"] == "not_enrolled"
    stream.send(protocol.verify("r2", "../etc", 3, 10))
    answer = stream.recv()
    assert answer.header["state"] == "failed" and answer.header["reason"] == "bad_request"
    stream.close()


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_open_policy_never_records_a_typed_by(recognizer):
    """Under --enrol-policy open a client-typed `by` is ignored: the record says unverified, not a name it chose."""
    records = _Records()
    logger = logging.getLogger("recognizer.identity.enrol")
    logger.addHandler(records)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        stream, _ = connect(recognizer, station="desk-v5")
        enrol = protocol.enrol("e1", "joe_biden", (FIXTURES / "biden_probe.jpg").read_bytes())
        enrol.header["by"] = "admin_ada"  # what an old edge (or a forger) would send
        stream.send(enrol)
        answer = stream.recv()
        assert answer.kind == MessageKind.ENROL_RESULT and answer.header["ok"], answer.header
        stream.close()
    finally:
        logger.removeHandler(records)
        logger.setLevel(old_level)
    assert not any("admin_ada" in m for m in records.messages), records.messages
    assert any("desk-v5/unverified" in m for m in records.messages), records.messages
