"""The recognizer over real loopback sockets: handshake, frames, bad input, enrolment, isolation."""
from __future__ import annotations

import logging
import socket
import struct
import threading
import time

import cv2
import pytest

from recognizer.identity.enrol import build_index
from recognizer.identity.index import load_index, save_index
from shared import protocol
from shared.protocol import MessageKind
from shared.stream import MessageStream
from tests.conftest import FIXTURES, KNOWN_FACES, SAMPLE_CLIP

pytestmark = pytest.mark.timeout(120)


def connect(app, station="desk-1", token="secret", version=protocol.PROTOCOL_VERSION) -> tuple[MessageStream, protocol.Message]:
    sock = socket.create_connection(app.server.address, timeout=10)
    stream = MessageStream(sock)
    hello = protocol.hello(station, "alice", token)
    hello.header["protocol"] = version
    stream.send(hello)
    return stream, stream.recv()


def ask(stream: MessageStream, jpeg: bytes, seq: int = 1) -> protocol.Message:
    stream.send(protocol.frame(seq, time.time(), jpeg))
    reply = stream.recv()
    assert reply.kind == MessageKind.RESULT and reply.header["seq"] == seq
    return reply


def photo(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def test_welcome(recognizer):
    stream, reply = connect(recognizer)
    assert reply.kind == MessageKind.WELCOME and reply.header["max_in_flight"] >= 1
    stream.send(protocol.heartbeat(12.5))
    assert stream.recv().header == {"ts": 12.5}
    stream.close()


@pytest.mark.parametrize(
    "kw,code", [({"token": "wrong"}, "bad_token"), ({"version": 99}, "bad_version"), ({"station": "../etc"}, "bad_station")]
)
def test_refused_handshakes(recognizer, kw, code):
    stream, reply = connect(recognizer, **kw)
    assert reply.kind == MessageKind.REFUSE and reply.header["code"] == code and reply.header["reason"]
    assert stream.recv() is None  # then the server closes
    stream.close()


def test_first_message_must_be_hello(recognizer):
    sock = socket.create_connection(recognizer.server.address, timeout=10)
    stream = MessageStream(sock)
    stream.send(protocol.frame(1, 0, photo("obama_probe.jpg")))
    reply = stream.recv()
    assert reply.kind == MessageKind.REFUSE and reply.header["code"] == "expected_hello"
    stream.close()


def test_known_and_unknown_faces_over_frames(recognizer):
    stream, _ = connect(recognizer, station="desk-known")
    states = [ask(stream, photo("obama_probe.jpg"), i).header["faces"] for i in range(8)]
    assert all(len(f) == 1 for f in states)
    assert states[-1][0]["state"] == "known" and states[-1][0]["name"] == "barack_obama"
    assert len({f[0]["track"] for f in states}) == 1  # one track throughout
    # a stranger takes the same desk: a new track, never named
    seen = [ask(stream, photo("stranger_kit.jpg"), 100 + i).header["faces"][0] for i in range(8)]
    assert all(f["name"] is None for f in seen)
    assert seen[-1]["state"] == "unknown"
    stream.close()


def test_annotated_jpeg_comes_back(recognizer):
    stream, _ = connect(recognizer, station="desk-ann")
    reply = ask(stream, photo("biden_probe.jpg"))
    img = cv2.imdecode(__import__("numpy").frombuffer(reply.payload, "uint8"), cv2.IMREAD_COLOR)
    src = cv2.imdecode(__import__("numpy").frombuffer(photo("biden_probe.jpg"), "uint8"), cv2.IMREAD_COLOR)
    assert img.shape == src.shape
    assert reply.header["faces"][0]["box"][2] > reply.header["faces"][0]["box"][0]
    stream.close()


def test_annotate_false_answers_faces_without_a_picture_and_a_bad_value_is_refused(recognizer):
    """HELLO annotate false (the edge draws the boxes): same faces, no JPEG; a non-boolean is refused with a reason."""
    sock = socket.create_connection(recognizer.server.address, timeout=10)
    stream = MessageStream(sock)
    stream.send(protocol.hello("desk-noann", "alice", "secret", annotate=False))
    assert stream.recv().kind == MessageKind.WELCOME
    reply = ask(stream, photo("biden_probe.jpg"))
    assert reply.payload == b"" and len(reply.header["faces"]) == 1 and "error" not in reply.header
    stream.close()
    bad = protocol.hello("desk-badann", "alice", "secret")
    bad.header["annotate"] = "no"
    stream = MessageStream(socket.create_connection(recognizer.server.address, timeout=10))
    stream.send(bad)
    refusal = stream.recv()
    assert refusal.kind == MessageKind.REFUSE and refusal.header["code"] == "bad_hello"
    assert "annotate must be true or false" in refusal.header["reason"]
    stream.close()


def test_corrupt_jpeg_answered_and_connection_kept(recognizer):
    stream, _ = connect(recognizer, station="desk-corrupt")
    bad = ask(stream, photo("obama_probe.jpg")[:5000], 1)
    assert bad.header["error"].startswith("bad_image") and bad.payload == b""
    assert ask(stream, b"\x00garbage", 2).header["error"].startswith("bad_image")
    good = ask(stream, photo("obama_probe.jpg"), 3)
    assert "error" not in good.header and len(good.header["faces"]) == 1
    stream.close()


def test_bad_header_field_closes_only_that_connection(recognizer):
    stream, _ = connect(recognizer, station="desk-badseq")
    stream.send(protocol.Message(MessageKind.FRAME, {"seq": "one"}, b""))
    reply = stream.recv()
    assert reply.kind == MessageKind.ERROR and "seq" in reply.header["reason"]
    assert stream.recv() is None
    stream.close()


def _serve_steadily(app, station: str, frames: int, results: list, stop: threading.Event) -> None:
    stream, _ = connect(app, station=station)
    jpeg = photo("obama_probe.jpg")
    for i in range(frames):
        if stop.is_set():
            break
        results.append((time.monotonic(), ask(stream, jpeg, i).header.get("error")))
    stream.close()


def test_garbage_and_drops_do_not_disturb_another_station(recognizer):
    results: list = []
    stop = threading.Event()
    worker = threading.Thread(target=_serve_steadily, args=(recognizer, "desk-steady", 40, results, stop))
    worker.start()
    time.sleep(0.3)
    addr = recognizer.server.address
    # 1) a huge length field: closed with a reason
    s = socket.create_connection(addr, timeout=5)
    s.sendall(struct.pack("!I", 0xFFFFFFF0))
    s.settimeout(5)
    data = s.recv(65536)
    assert b"limit" in data or data == b""
    s.close()
    # 2) random garbage
    s = socket.create_connection(addr, timeout=5)
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    s.settimeout(5)
    while s.recv(65536):
        pass
    s.close()
    # 3) handshake, then disconnect in the middle of a frame
    stream, _ = connect(recognizer, station="desk-drop")
    data = protocol.encode(protocol.frame(1, 0, photo("obama_probe.jpg")))
    stream.sock.sendall(data[: len(data) // 2])
    stream.close()
    worker.join(timeout=90)
    assert len(results) == 40 and all(err is None for _, err in results)
    # the steady station never waited long between answers while the others misbehaved
    gaps = [b[0] - a[0] for a, b in zip(results, results[1:])]
    assert max(gaps) < 3.0
    deadline = time.monotonic() + 5  # the server notices the half-sent frame's EOF on its own thread
    while "desk-drop" in [s.station for s in recognizer.server.stations()] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "desk-drop" not in [s.station for s in recognizer.server.stations()]


def test_enrol_over_protocol_then_recognised(recognizer):
    stream, _ = connect(recognizer, station="desk-enrol")
    stream.send(protocol.enrol("r1", "../../etc", photo("stranger_kit.jpg")))
    bad = stream.recv()
    assert bad.kind == MessageKind.ENROL_RESULT and not bad.header["ok"] and "must not contain" in bad.header["reason"]
    stream.send(protocol.enrol("r2", "Kit", photo("two_people.jpg")))
    assert "2 faces" in stream.recv().header["reason"]
    stream.send(protocol.enrol("r3", "Kit", photo("stranger_kit.jpg")))
    ok = stream.recv()
    assert ok.header["ok"] and ok.header["request_id"] == "r3" and ok.header["name"] == "Kit"
    top, right, bottom, left = ok.header["box"]  # where the enrolled face is, and its picture
    assert 600 < left < right < 900 and 50 < top < bottom < 350
    assert ok.payload[:2] == b"\xff\xd8"
    faces = [ask(stream, photo("stranger_kit.jpg"), i).header["faces"][0] for i in range(8)]
    assert faces[-1]["name"] == "Kit"
    stream.close()


def test_enrol_of_an_enrolled_face_under_another_name_needs_the_confirmation(recognizer, sample_index_dir):
    """Over the wire: refused with who it looks like (code looks_like); the confirmation naming that person enrols."""
    stream, _ = connect(recognizer, station="desk-alike")
    stream.send(protocol.enrol("a1", "Test Evaluator", photo("obama_probe.jpg")))
    refused = stream.recv()
    assert not refused.header["ok"] and refused.header["code"] == "looks_like"
    alike = refused.header["lookalike"]
    assert alike["name"] == "barack_obama" and 0 < alike["distance"] <= 0.58
    assert refused.header["reason"].startswith(f"looks like barack_obama ({alike['distance']:.2f})")
    assert "Test Evaluator" not in recognizer.server.store.index.people
    stream.send(protocol.enrol("a2", "Test Evaluator", photo("obama_probe.jpg"), confirm_lookalike="barack_obama"))
    ok = stream.recv()
    assert ok.header["ok"] and "confirmed deliberately" in ok.header["reason"] and ok.header["lookalike"]["name"] == "barack_obama"
    assert "Test Evaluator" in recognizer.server.store.index.people
    stream.close()
    # the module's recognizer is shared: take the lookalike out again (as an operator would, by rebuilding)
    save_index(load_index(sample_index_dir), recognizer.settings.index_dir)
    deadline = time.time() + 5
    while "Test Evaluator" in recognizer.server.store.index.people and time.time() < deadline:
        time.sleep(0.1)
    assert "Test Evaluator" not in recognizer.server.store.index.people


def test_index_rebuilt_on_disk_is_picked_up_without_restart(recognizer, engine, tmp_path, sample_index_dir):
    only_biden = tmp_path / "kf"
    (only_biden / "joe_biden").mkdir(parents=True)
    for p in (KNOWN_FACES / "joe_biden").iterdir():
        (only_biden / "joe_biden" / p.name).write_bytes(p.read_bytes())
    index, _ = build_index(engine, only_biden)
    save_index(index, recognizer.settings.index_dir)
    deadline = time.time() + 5
    while recognizer.server.store.index.people != ["joe_biden"] and time.time() < deadline:
        time.sleep(0.1)
    assert recognizer.server.store.index.people == ["joe_biden"]
    stream, _ = connect(recognizer, station="desk-reload")
    faces = [ask(stream, photo("obama_probe.jpg"), i).header["faces"][0] for i in range(8)]
    assert faces[-1]["name"] is None  # Obama is no longer enrolled
    stream.close()
    for f in sample_index_dir.iterdir():  # put the module's index back for the other tests
        (recognizer.settings.index_dir / f.name).write_bytes(f.read_bytes())
    deadline = time.time() + 5
    while len(recognizer.server.store.index.people) != 4 and time.time() < deadline:
        time.sleep(0.1)


def test_real_clip_names_lin_manuel(recognizer):
    """The bundled clip: Lin-Manuel Miranda (enrolled) is named on some frames."""
    stream, _ = connect(recognizer, station="desk-clip")
    cap = cv2.VideoCapture(str(SAMPLE_CLIP))
    named, n, states = set(), 0, []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        for face in ask(stream, cv2.imencode(".jpg", frame)[1].tobytes(), n).header["faces"]:
            states.append((n, face["track"], face["state"], round(face["distance"] or 0, 2)))
            if face["name"]:
                named.add(face["name"])
        n += 1
    stream.close()
    assert "lin_manuel_miranda" in named, (recognizer.server.store.index.people, states)


def test_a_station_that_disconnects_has_its_incidents_closed_at_once(recognizer, caplog):
    """The end of a session is an event the server delivers to the alert monitor on the station's own thread as
    the connection ends; no thread polls for ended sessions."""
    caplog.set_level(logging.INFO, logger="recognizer.alerting.monitor")

    def alert_lines(state: str, within_s: float = 10.0) -> list[logging.LogRecord]:
        deadline = time.monotonic() + within_s
        while True:
            lines = [r for r in caplog.records if r.getMessage().startswith(f"alert camera_tamper {state} station=desk-gone")]
            if lines or time.monotonic() > deadline:
                return lines
            time.sleep(0.01)

    stream, reply = connect(recognizer, station="desk-gone")
    assert reply.kind == MessageKind.WELCOME
    stream.send(protocol.heartbeat(1.0, {"state": "lost", "error": "unplugged", "lost_s": 3.0}))
    assert stream.recv().header == {"ts": 1.0}
    assert alert_lines("open")  # camera lost: the incident opens at once, on the station's thread
    stream.close()
    t0 = time.monotonic()
    (closed,) = alert_lines("closed")
    assert "'closed_by': 'station_disconnected'" in closed.getMessage()
    assert closed.threadName.startswith("station-")  # delivered by the session's end, not by a sweeper
    assert time.monotonic() - t0 < 2.0
    assert not [t for t in threading.enumerate() if t.name == "alert-sweeper"]
