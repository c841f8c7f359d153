"""Fixtures for the edge tests: a real clip, the frame holders, and a small fake recognizer server.

The fake server speaks the real protocol through `shared.stream.MessageStream` on a real socket at
127.0.0.1; it answers each FRAME with the same JPEG after a configurable delay, so the edge's
window, skipping, latency and reconnection can be measured without dlib.
"""
from __future__ import annotations

import queue
import socket
import socketserver
import threading
import time
from pathlib import Path
from typing import Callable, Iterator, Optional

import cv2
import numpy as np
import pytest

from edge.frames import LatestFrame
from edge.link import LinkSettings, RecognizerLink
from shared import protocol
from shared.protocol import MessageKind, ProtocolError
from shared.results import FaceResult
from shared.stream import MessageStream

REPO = Path(__file__).resolve().parents[2]
SAMPLE_CLIP = REPO / "samples" / "hamilton_clip.mp4"
PHOTO = REPO / "tests" / "fixtures" / "obama_probe.jpg"
TOKEN = "s3cret"



@pytest.fixture(scope="session")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped demo clip; else a 3 s, 30 fps clip written from a real photo (slowly panning)."""
    if SAMPLE_CLIP.is_file():
        return SAMPLE_CLIP
    image = cv2.imread(str(PHOTO))
    if image is None:
        pytest.skip(f"neither {SAMPLE_CLIP} nor {PHOTO} is present")
    image = cv2.resize(image, (720, 405))
    path = tmp_path_factory.mktemp("clip") / "generated.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (640, 360))
    for i in range(90):
        writer.write(image[i % 45 : i % 45 + 360, i % 80 : i % 80 + 640])
    writer.release()
    return path


def wait_until(predicate: Callable[[], bool], timeout: float, step: float = 0.02) -> bool:
    """Poll `predicate` (test helper only) until it holds or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


class FakeRecognizer:
    """A stand-in recognizer on 127.0.0.1: HELLO/WELCOME/REFUSE, echo RESULT after `delay_s`, ENROL, HEARTBEAT.

    `kill()` closes the listener and every connection; `start()` listens again on the same port.
    """

    def __init__(
        self,
        token: str = TOKEN,
        delay_s: float = 0.0,
        max_in_flight: int = 4,
        heartbeat_s: float = 1.0,
        answer: bool = True,
        enrol_answer: bool = True,
    ) -> None:
        self.token = token
        self.delay_s = delay_s
        self.max_in_flight = max_in_flight
        self.heartbeat_s = heartbeat_s
        self.answer = answer
        self.enrol_answer = enrol_answer
        self.lookalike = ""  # set: every face "looks like" this enrolled person (refused unless confirmed)
        self.port = 0
        self.hellos: list[dict] = []
        self.sessions: list[str] = []
        self.enrols: list[dict] = []
        self.frames = 0
        self.max_outstanding = 0
        self.outstanding = 0
        self._lock = threading.Lock()
        self._listener: Optional[socket.socket] = None
        self._streams: list[MessageStream] = []
        self._threads: list[threading.Thread] = []
        self._alive = threading.Event()

    @property
    def address(self) -> tuple[str, int]:
        return "127.0.0.1", self.port

    def start(self) -> "FakeRecognizer":
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen()
        self.port = listener.getsockname()[1]
        self._listener = listener
        self._alive.set()
        self._spawn(self._accept, listener)
        return self

    def kill(self) -> None:
        self._alive.clear()
        if self._listener is not None:
            try:
                self._listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._listener.close()
            self._listener = None
        with self._lock:
            streams, self._streams = self._streams, []
        for s in streams:
            s.close()
        for t in list(self._threads):
            t.join(5)
        self._threads = [t for t in self._threads if t.is_alive()]

    def _spawn(self, target: Callable, *args: object) -> None:
        t = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(t)
        t.start()

    def _accept(self, listener: socket.socket) -> None:
        while self._alive.is_set():
            try:
                sock, _ = listener.accept()
            except OSError:
                return
            stream = MessageStream(sock)
            with self._lock:
                self._streams.append(stream)
            self._spawn(self._serve, stream)

    def _serve(self, stream: MessageStream) -> None:
        work: "queue.Queue[Optional[protocol.Message]]" = queue.Queue()
        worker = threading.Thread(target=self._work, args=(stream, work), daemon=True)
        try:
            hello = stream.recv()
            if hello is None or hello.kind != MessageKind.HELLO:
                return
            with self._lock:
                self.hellos.append(dict(hello.header))
            if hello.header.get("token") != self.token:
                stream.send(protocol.refuse("bad_token", f"wrong token for station {hello.header.get('station')}"))
                return
            stream.send(protocol.welcome("fake", self.max_in_flight, self.heartbeat_s))
            worker.start()
            while True:
                msg = stream.recv()
                if msg is None:
                    return
                if msg.kind == MessageKind.FRAME:
                    with self._lock:
                        self.frames += 1
                        self.outstanding += 1
                        self.max_outstanding = max(self.max_outstanding, self.outstanding)
                    work.put(msg)
                elif msg.kind == MessageKind.ENROL:
                    with self._lock:
                        self.enrols.append(dict(msg.header))
                    if self.enrol_answer:
                        name = msg.header["name"]
                        image = cv2.imdecode(np.frombuffer(msg.payload, np.uint8), cv2.IMREAD_COLOR)
                        ok = image is not None
                        reason = "enrolled" if ok else "bad image"
                        box, crop = None, b""
                        if ok:  # like the recognizer: the middle of the picture as "the enrolled face"
                            h, w = image.shape[:2]
                            box = (h // 4, 3 * w // 4, 3 * h // 4, w // 4)
                            crop = cv2.imencode(".jpg", image[box[0]:box[2], box[3]:box[1]])[1].tobytes()
                        alike, code = None, ""
                        if ok and self.lookalike and name != self.lookalike:  # like the recognizer's lookalike rule
                            alike = {"name": self.lookalike, "distance": 0.41}
                            if msg.header.get("confirm_lookalike") != self.lookalike:
                                ok, code, reason = False, "looks_like", f"looks like {self.lookalike} (0.41): ..."
                        stream.send(protocol.enrol_result(msg.header["request_id"], ok, reason, name, 1, code=code,
                                                          box=box, crop=crop, lookalike=alike))
                elif msg.kind == MessageKind.SESSION:
                    self.sessions.append(msg.header["login"])
                elif msg.kind == MessageKind.HEARTBEAT and self.answer:
                    stream.send(protocol.heartbeat(msg.header["ts"]))
        except (OSError, ProtocolError):
            return
        finally:
            work.put(None)
            if worker.is_alive():
                worker.join(5)
            stream.close()

    def _work(self, stream: MessageStream, work: "queue.Queue[Optional[protocol.Message]]") -> None:
        while (msg := work.get()) is not None:
            time.sleep(self.delay_s)  # the "recognition" work: one frame at a time, like a busy server
            if not self.answer:
                continue
            faces = [FaceResult((10, 60, 60, 10), 1, "known", "alice", distance=0.4, liveness="live").to_wire()]
            with self._lock:
                self.outstanding -= 1
            try:
                stream.send(protocol.result(msg.header["seq"], msg.header["ts"], faces, msg.payload))
            except OSError:
                return


@pytest.fixture
def fake_recognizer() -> Iterator[FakeRecognizer]:
    server = FakeRecognizer().start()
    yield server
    server.kill()


@pytest.fixture
def holders() -> tuple[LatestFrame, LatestFrame]:
    """(raw, annotated) sharing one Condition, as edge.__main__ builds them."""
    cond = threading.Condition()
    return LatestFrame(cond), LatestFrame(cond)


def make_link(server_or_port, raw: LatestFrame, annotated: LatestFrame, **overrides) -> RecognizerLink:
    port = server_or_port if isinstance(server_or_port, int) else server_or_port.port
    settings = LinkSettings(port=port, station="desk-1", login="alice", token=TOKEN, **overrides)
    return RecognizerLink(settings, raw, annotated)




class MjpegServer:
    """A network camera on 127.0.0.1: `GET /stream.mjpg` is multipart/x-mixed-replace JPEGs at `fps`.

    `kill()` drops the listener and every open stream (the camera dies); `start()` serves again on
    the same port (it comes back).
    """

    def __init__(self, frames: list[bytes], fps: float = 15.0) -> None:
        if not frames:
            raise ValueError("an MJPEG server needs at least one JPEG frame")
        self.frames = frames
        self.fps = fps
        self.port = 0
        self.served = 0
        self._server: Optional["socketserver.ThreadingTCPServer"] = None
        self._thread: Optional[threading.Thread] = None
        self._alive = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/stream.mjpg"

    def start(self) -> "MjpegServer":
        import http.server

        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # quiet: the test logs what matters
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                if self.path != "/stream.mjpg":
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                i = 0
                try:
                    while owner._alive.is_set():
                        jpeg = owner.frames[i % len(owner.frames)]
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: "
                                         + str(len(jpeg)).encode() + b"\r\n\r\n" + jpeg + b"\r\n")
                        self.wfile.flush()
                        owner.served += 1
                        i += 1
                        time.sleep(1.0 / owner.fps)
                except OSError:
                    return

        class Server(http.server.ThreadingHTTPServer):
            allow_reuse_address = True
            daemon_threads = True
            block_on_close = False

        self._server = Server(("127.0.0.1", self.port), Handler)
        self.port = self._server.server_address[1]
        self._alive.set()
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self._thread.start()
        return self

    def kill(self) -> None:
        self._alive.clear()  # every streaming handler ends its response
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None


def photo_frames(path: Path = PHOTO, width: int = 640, count: int = 10) -> list[bytes]:
    """`count` JPEGs of a real photo, shrunk to `width`, each shifted by a pixel so the picture is not frozen."""
    image = cv2.imread(str(path))
    if image is None:
        pytest.skip(f"{path} is missing")
    image = cv2.resize(image, (width, round(image.shape[0] * width / image.shape[1])), interpolation=cv2.INTER_AREA)
    return [cv2.imencode(".jpg", np.roll(image, i, axis=1), [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes()
            for i in range(count)]
