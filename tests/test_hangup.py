"""An edge that hangs up is noticed at once, even while its station's thread is busy with a frame and more are queued.

Real recognizer on 127.0.0.1, a real edge-side process SIGKILLed mid-frame; the figure is compared with the frame
time of the same recognizer measured in the same test (the thread would otherwise learn it only after running the
queued frames: issue 19, 6-11 s late with 10 desks on two cores).
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

import cv2
import numpy as np
import pytest

from recognizer.server.hangup import HangupWatch, keep_alive
from shared import protocol
from shared.protocol import MessageKind
from shared.stream import MessageStream
from tests.conftest import FIXTURES, REPO

pytestmark = [pytest.mark.timeout(180),
              pytest.mark.skipif(not HangupWatch.available, reason="needs Linux epoll with EPOLLRDHUP")]

# the edge side: HELLO, WELCOME, then `frames` frames at once (more than the window: a greedy edge), then it waits
_EDGE = r"""
import socket, sys, time
from shared import protocol
from shared.stream import MessageStream
host, port, station, frames, path = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5]
jpeg = open(path, "rb").read()
stream = MessageStream(socket.create_connection((host, port), timeout=10))
stream.send(protocol.hello(station, "alice", "secret"))
assert stream.recv().kind == protocol.MessageKind.WELCOME
for seq in range(1, frames + 1):
    stream.send(protocol.frame(seq, time.time(), jpeg))
print("sent", flush=True)
time.sleep(600)
"""


def _big_frame(tmp_path) -> tuple[bytes, str]:
    """A 1920x1080 frame with two faces: a frame that costs the recognizer real time (HOG over the whole frame)."""
    a, b = (cv2.imread(str(FIXTURES / n)) for n in ("obama_probe.jpg", "biden_probe.jpg"))
    canvas = np.full((1080, 1920, 3), 90, np.uint8)
    for img, x in ((a, 200), (b, 1100)):
        h, w = img.shape[:2]
        scale = min(700 / h, 600 / w)
        img = cv2.resize(img, (int(w * scale), int(h * scale)))
        canvas[200:200 + img.shape[0], x:x + img.shape[1]] = img
    ok, buf = cv2.imencode(".jpg", canvas, [cv2.IMWRITE_JPEG_QUALITY, 85])
    assert ok
    path = tmp_path / "big.jpg"
    path.write_bytes(buf.tobytes())
    return buf.tobytes(), str(path)


def _frame_time(app, jpeg: bytes, frames: int = 3, station: str = "desk-baseline") -> list[float]:
    """Seconds from sending a frame to its RESULT, `frames` times, for a well-behaved station (the baseline)."""
    stream = MessageStream(socket.create_connection(app.server.address, timeout=30))
    stream.send(protocol.hello(station, "alice", "secret"))
    assert stream.recv().kind == MessageKind.WELCOME
    times = []
    for seq in range(1, frames + 1):
        t0 = time.monotonic()
        stream.send(protocol.frame(seq, time.time(), jpeg))
        while (reply := stream.recv()).kind != MessageKind.RESULT:
            pass
        times.append(time.monotonic() - t0)
    stream.close()
    return times


def _registered(app, station: str) -> bool:
    return any(s.station == station for s in app.server.stations())


def _kill_mid_frame(app, station: str, path: str, frame_s: float, caplog) -> tuple[float, float]:
    """An edge process sends 4 frames and is SIGKILLed while the recognizer runs the first: (seconds from the kill
    until the desk is no longer in session, seconds until its session ended)."""
    edge = subprocess.Popen([sys.executable, "-c", _EDGE, *map(str, app.server.address), station, "4", path],
                            cwd=REPO, stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert edge.stdout.readline().strip() == "sent"
        deadline = time.monotonic() + 30
        while not _registered(app, station):
            assert time.monotonic() < deadline, "the edge never got a session"
            time.sleep(0.005)
        time.sleep(frame_s / 4)  # the station's thread is now inside frame 1, frames 2-4 wait in the socket
        t_kill = time.monotonic()
        os.killpg(edge.pid, signal.SIGKILL)
        while _registered(app, station):
            assert time.monotonic() - t_kill < 60
            time.sleep(0.002)
        gone_s = time.monotonic() - t_kill
        deadline = time.monotonic() + 60
        while not any(r.getMessage() == f"station {station} disconnected" for r in caplog.records):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        return gone_s, time.monotonic() - t_kill
    finally:
        if edge.poll() is None:
            os.killpg(edge.pid, signal.SIGKILL)
        edge.wait()


def test_a_killed_edge_is_gone_at_once_although_its_thread_is_busy(recognizer, tmp_path, caplog):
    """Baselines in the same test: the frame time of a well-behaved station, and the same kill with the watch off
    (the thread then learns it at a later read or send, after the queued frames)."""
    caplog.set_level(logging.INFO, logger="recognizer.server.stations")
    jpeg, path = _big_frame(tmp_path)
    # warm-up (first frame builds what it needs) as another desk: under load the server may not have ended the
    # warm-up's session yet when the baseline connects, and a shared-token desk cannot replace its own live session
    _frame_time(recognizer, jpeg, 1, station="desk-warmup")
    baseline = sorted(_frame_time(recognizer, jpeg))
    frame_s = baseline[1]
    server = recognizer.server
    ended: dict[str, int] = {}  # station -> frames its session ran, told at its end

    class Frames:
        def on_frame(self, status, outcome, raw_jpeg): pass

        def on_camera(self, status): pass

        def on_disconnect(self, status, reason):
            ended[status.station] = status.frames

    frames = Frames()
    server.observers.append(frames)
    watch = server.hangups
    try:
        server.hangups = HangupWatch(enabled=False)
        try:
            unwatched = _kill_mid_frame(recognizer, "desk-unwatched", path, frame_s, caplog)
        finally:
            server.hangups = watch
        gone_s, ended_s = _kill_mid_frame(recognizer, "desk-killed", path, frame_s, caplog)
    finally:
        server.observers.remove(frames)
    print(f"frame {baseline[0]:.3f}/{baseline[1]:.3f}/{baseline[2]:.3f} s (min/median/max of 3); kill -> not in "
          f"session {gone_s:.3f} s (watch off: {unwatched[0]:.3f}), kill -> session ended {ended_s:.3f} s (watch off: "
          f"{unwatched[1]:.3f}); frames run {ended}; load {os.getloadavg()[0]:.2f}")
    # dlib keeps the GIL while it detects: the watch speaks at the frame's next Python step, within the frame in hand
    assert gone_s < 1.5 * baseline[2], (gone_s, baseline)
        # the frames each session ran: the one in hand; without the watch, more of the queued ones (the thread learns
    # it only when a send after them fails)
    assert ended["desk-killed"] == 1 and ended["desk-unwatched"] >= 2, ended
    assert ended_s < 1.5 * baseline[2], (ended_s, baseline)  # the frame in hand at most (timing varies too much
    # under load to compare with the unwatched kill's time; the frame counts above are the comparison)
    # (how the thread learns it differs with timing: the RDHUP check before the next message, or a reset on its read)


@pytest.mark.parametrize("how", ["close", "reset"])
def test_hangup_watch_on_loopback(how):
    """FIN (a close; the kernel closing a killed process's socket) and RST (SO_LINGER 0) both reach the callback,
    once; an open connection with data flowing does not."""
    watch = HangupWatch(poll_s=0.05)
    watch.start()
    listener = socket.create_server(("127.0.0.1", 0))
    try:
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
        keep_alive(server, 2.0, 6.0)
        assert server.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        called = []
        heard = threading.Event()
        key = watch.watch(server, lambda: (called.append(1), heard.set()))
        client.sendall(b"x" * 1000)  # data arriving wakes nobody
        assert not heard.wait(0.3)
        if how == "reset":
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        t0 = time.monotonic()
        client.close()
        assert heard.wait(5)
        assert time.monotonic() - t0 < 1.0
        time.sleep(0.2)
        assert called == [1]
        watch.forget(server, key)
        server.close()
    finally:
        listener.close()
        watch.stop()
