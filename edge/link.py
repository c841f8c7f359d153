"""The edge's connection to the recognizer: handshake, newest-frame sender, result receiver, enrolment.

One manager thread connects (exponential back-off, jittered), runs the handshake and then the sender
loop; one receiver thread per connection reads replies. The sender keeps at most `window` frames in
flight (the smaller of the server's `max_in_flight` and ours). While the window is full, newly captured
frames are skipped, never queued: when a slot frees, the *newest* frame goes out, so round-trip
latency stays about one server-processing time however slow the server is.
"""
from __future__ import annotations

import logging
import random
import socket
import threading
import time
import uuid
from dataclasses import dataclass, replace
from typing import Callable, Optional

import cv2
import numpy as np

from edge.frames import LatestFrame, RateMeter
from shared import protocol
from shared.backoff import Backoff
from shared.names import InvalidName, validate_name
from shared.protocol import Message, MessageKind, ProtocolError
from shared.stream import MessageStream

log = logging.getLogger(__name__)

_WAIT_SLICE_S = 0.25  # longest a sender wait lasts before it re-checks stop / heartbeat / silence
_DEAD_AFTER_HEARTBEATS = 3.0


@dataclass(frozen=True)
class LinkSettings:
    """How the edge talks to the recognizer. Times in seconds."""

    host: str = "127.0.0.1"
    port: int = 8002
    station: str = "edge"
    login: str = ""
    token: str = ""
    credential: str = ""  # this station's own token, proving its station id (recognizer --station-auth dashboard)
    jpeg_quality: int = 80  # 1-100, for frames sent for recognition
    max_width: int = 0  # frames wider than this are shrunk before sending (0: never)
    max_in_flight: int = 2  # our cap on unanswered frames; the server's WELCOME may lower it
    connect_timeout_s: float = 5.0
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 10.0
    refused_backoff_initial_s: float = 5.0  # after a REFUSE (bad token/version): retry, but slowly
    refused_backoff_max_s: float = 60.0
    backoff_jitter: float = 0.2  # each delay +/- this fraction, so desks that lost the server do not return together
    default_heartbeat_s: float = 5.0  # when the WELCOME does not say
    result_timeout_s: float = 10.0  # an unanswered frame stops counting as in flight after this
    enrol_jpeg_quality: int = 95


def encode_jpeg(frame: np.ndarray, quality: int, max_width: int = 0) -> bytes:
    """JPEG bytes of a BGR frame, first shrunk (aspect kept) to `max_width` pixels when it is wider."""
    if max_width and frame.shape[1] > max_width:
        height = max(1, round(frame.shape[0] * max_width / frame.shape[1]))
        frame = cv2.resize(frame, (max_width, height), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("OpenCV could not JPEG-encode the frame")
    return buf.tobytes()


class _Connection:
    """State of one live connection, shared by the sender (manager thread) and the receiver thread."""

    def __init__(self, stream: MessageStream, window: int, heartbeat_s: float, server: str) -> None:
        self.stream = stream
        self.window = window
        self.heartbeat_s = heartbeat_s
        self.server = server
        self.cond = threading.Condition()
        self.in_flight: dict[int, float] = {}  # seq -> monotonic send time
        self.last_rx = time.monotonic()
        self.dead = False
        self.reason = ""
        self.refused = False

    def fail(self, reason: str, refused: bool = False) -> None:
        """Mark the connection dead (first reason wins) and close the socket to unblock both threads."""
        with self.cond:
            if self.dead:
                return
            self.dead, self.reason, self.refused = True, reason, refused
            self.cond.notify_all()
        self.stream.close()


class _Refused(Exception):
    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"refused ({code}): {reason}")
        self.code, self.reason = code, reason


class _PendingEnrol:
    def __init__(self) -> None:
        self.done = threading.Event()
        self.answer: dict = {}


class _PendingVerify:
    """A sign-in face check sent to the recognizer: its latest progress and who to tell when it ends."""

    def __init__(self, request_id: str, identity: str, deadline: float, on_done: Callable[[dict], None]) -> None:
        self.request_id = request_id
        self.identity = identity
        self.deadline = deadline  # monotonic; the edge gives up even if the recognizer never answers
        self.on_done = on_done
        self.progress: dict = {"state": "pending", "reason": "", "message": "", "agreeing": 0}


class RecognizerLink:
    """Keeps the edge connected to the recognizer and streams the newest camera frames to it.

    `raw` is where the capture thread publishes BGR frames; annotated JPEGs from the recognizer are
    published into `annotated`. `start()` launches the threads, `stop()` ends and joins them.
    """

    def __init__(
        self,
        settings: LinkSettings,
        raw: LatestFrame,
        annotated: LatestFrame,
        rng: Callable[[], float] = random.random,
        camera: Optional[Callable[[], Optional[dict]]] = None,
    ) -> None:
        self.settings = settings
        self.raw = raw
        self.annotated = annotated
        self._rng = rng
        # the camera's state for the recognizer ({"state": "ok"|"lost", "error", "lost_s"}; None: not known yet)
        self._camera = camera if camera is not None else (lambda: None)
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._lock = threading.Lock()  # guards the fields below
        self._conn: Optional[_Connection] = None
        self._pending: dict[str, _PendingEnrol] = {}
        self._verify: Optional[_PendingVerify] = None  # at most one sign-in face check per desk
        self._state = "offline"
        self._reason = "not started"
        self._since = time.time()
        self._result_rate = RateMeter()
        self._latency_ms: Optional[float] = None
        self._latency_avg_ms: Optional[float] = None
        self._faces: list = []
        self._last_result_at: Optional[float] = None
        self._last_error: Optional[str] = None
        self._sent = self._skipped = self._results = self._connects = 0

    # ---- lifecycle ----

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("RecognizerLink already started")
        self._thread = threading.Thread(target=self._run, name="link", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Set the stop event, close the live connection and join every thread."""
        self._stop.set()
        with self._lock:
            conn = self._conn
        if conn is not None:
            conn.fail("edge stopping")
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.error("link thread did not stop within %.1f s", timeout)

    @property
    def online(self) -> bool:
        with self._lock:
            return self._state == "online"

    def offline_reason(self) -> Optional[str]:
        """None while online; otherwise why not (for the page's banner)."""
        with self._lock:
            return None if self._state == "online" else self._reason

    # ---- public operations ----

    def status(self) -> dict:
        """A JSON-able snapshot: connection state and reason, result fps, latency, in-flight, faces."""
        with self._lock:
            conn = self._conn
            in_flight = len(conn.in_flight) if conn is not None else 0
            return {
                "recognizer": f"{self.settings.host}:{self.settings.port}",
                "state": self._state,
                "online": self._state == "online",
                "reason": self._reason,
                "since": self._since,
                "server": conn.server if conn is not None else None,
                "station": self.settings.station,
                "login": self.settings.login,
                "fps": round(self._result_rate.rate(), 2),
                "latency_ms": _round(self._latency_ms),
                "latency_avg_ms": _round(self._latency_avg_ms),
                "in_flight": in_flight,
                "window": conn.window if conn is not None else 0,
                "frames_sent": self._sent,
                "frames_skipped": self._skipped,
                "results": self._results,
                "connects": self._connects,
                "faces": list(self._faces),
                "last_result_age_s": _round(time.time() - self._last_result_at, 3) if self._last_result_at else None,
                "last_error": self._last_error,
            }

    def enrol(self, name: str, timeout: float = 10.0, grant: str = "") -> dict:
        """Send the current raw frame to be enrolled as `name` (with the dashboard's enrol `grant`); wait for the answer.

        Always returns a dict with `ok` and `reason` (and `code` for answers made here: invalid_name,
        offline, no_frame, timeout; or the recognizer's refusal code, e.g. no_grant, grant_used); on success
        also `box` (in the sent frame) and `crop` (JPEG bytes of the enrolled face) when the recognizer sent them.
        """
        try:
            name = validate_name(name)
        except InvalidName as exc:
            return {"ok": False, "code": "invalid_name", "reason": str(exc), "name": str(name)}
        with self._lock:
            conn = self._conn if self._state == "online" else None
            offline_reason = self._reason
        if conn is None:
            return {"ok": False, "code": "offline", "reason": f"recognizer offline: {offline_reason}", "name": name}
        frame = self.raw.latest()
        if frame is None:
            return {"ok": False, "code": "no_frame", "reason": "no camera frame yet", "name": name}
        jpeg = encode_jpeg(frame.data, self.settings.enrol_jpeg_quality)
        request_id = uuid.uuid4().hex
        pending = _PendingEnrol()
        with self._lock:
            self._pending[request_id] = pending
        try:
            conn.stream.send(protocol.enrol(request_id, name, jpeg, grant=grant))
            log.info("enrol request %s sent for %r (%d bytes)", request_id, name, len(jpeg))
            if not pending.done.wait(timeout):
                return {
                    "ok": False,
                    "code": "timeout",
                    "reason": f"the recognizer did not answer within {timeout:g} s",
                    "name": name,
                }
            return pending.answer
        except OSError as exc:
            conn.fail(f"send failed: {exc}")
            return {"ok": False, "code": "offline", "reason": f"recognizer offline: {exc}", "name": name}
        finally:
            with self._lock:
                self._pending.pop(request_id, None)

    def set_login(self, login: str) -> None:
        """Change the logged-in evaluator: used by the next HELLO and sent now as SESSION when online."""
        login = validate_name(login, "login") if login else ""
        with self._lock:
            self.settings = replace(self.settings, login=login)
            conn = self._conn if self._state == "online" else None
        if conn is not None:
            try:
                conn.stream.send(protocol.session(login))
            except OSError as exc:
                conn.fail(f"send failed: {exc}")
        log.info("login set to %r", login)

    def verify(self, identity: str, frames: int, timeout_s: float, on_done: Callable[[dict], None]) -> Optional[str]:
        """Ask the recognizer to check the next frames against `identity` only; returns the request id.

        Returns None (and calls nothing) when the recognizer is offline. `on_done(progress)` is called
        once, from a link thread, with the final progress dict (state "passed" or "failed", reason).
        A check already running is cancelled first (its `on_done` gets reason "cancelled").
        """
        identity = validate_name(identity, "identity")
        with self._lock:
            conn = self._conn if self._state == "online" else None
        if conn is None:
            return None
        self.cancel_verify()
        request_id = uuid.uuid4().hex
        # the recognizer times the check from its first frame; allow it a little more here
        pending = _PendingVerify(request_id, identity, time.monotonic() + timeout_s + 5.0, on_done)
        with self._lock:
            self._verify = pending
        if not self._send(conn, protocol.verify(request_id, identity, frames, timeout_s)):
            self._finish_verify(request_id, {"state": "failed", "reason": "offline", "message": "recognizer offline"})
            return request_id
        log.info("sign-in face check %s started for %r", request_id, identity)
        return request_id

    def verify_progress(self, request_id: str) -> Optional[dict]:
        """The latest progress of the check `request_id`, or None when it is not the current one."""
        self._expire_verify()
        with self._lock:
            v = self._verify
            return dict(v.progress) if v is not None and v.request_id == request_id else None

    def cancel_verify(self) -> None:
        """Cancel the current check, if any (its on_done is called with reason 'cancelled')."""
        with self._lock:
            v = self._verify
            conn = self._conn if self._state == "online" else None
        if v is None:
            return
        if conn is not None:
            self._send(conn, protocol.verify_cancel(v.request_id))
        self._finish_verify(v.request_id, {"state": "failed", "reason": "cancelled", "message": "cancelled"})

    def _finish_verify(self, request_id: str, progress: dict) -> None:
        with self._lock:
            v = self._verify
            if v is None or v.request_id != request_id:
                return
            v.progress = progress
            self._verify = None
        try:
            v.on_done(progress)
        except Exception:  # the callback's bug must not kill the receiver thread; logged with its trace
            log.exception("sign-in callback failed for %s", request_id)

    def _expire_verify(self) -> None:
        with self._lock:
            v = self._verify
        if v is not None and time.monotonic() > v.deadline:
            self._finish_verify(v.request_id, {"state": "failed", "reason": "timed_out",
                                               "message": "the recognizer did not finish the face check in time"})

    # ---- manager thread ----

    def _set_state(self, state: str, reason: str) -> None:
        with self._lock:
            if (state, reason) != (self._state, self._reason):
                self._state, self._reason, self._since = state, reason, time.time()

    def _run(self) -> None:
        s = self.settings
        backoff = Backoff(s.backoff_initial_s, s.backoff_max_s, s.backoff_jitter, rng=self._rng)
        refused_backoff = Backoff(s.refused_backoff_initial_s, s.refused_backoff_max_s, s.backoff_jitter, rng=self._rng)
        self._set_state("connecting", f"connecting to {s.host}:{s.port}")
        while not self._stop.is_set():
            # After a failure the state stays "offline"/"refused" with its reason while we retry.
            try:
                conn = self._connect()
            except _Refused as exc:
                delay = refused_backoff.next_delay()
                log.warning("recognizer %s:%d refused us: %s; retrying in %.1f s", s.host, s.port, exc, delay)
                self._set_state("refused", f"refused: {exc.reason} ({exc.code})")
                self._stop.wait(delay)
                continue
            except (OSError, ProtocolError) as exc:
                delay = backoff.next_delay()
                log.info("recognizer %s:%d unreachable (%s); retrying in %.1f s", s.host, s.port, exc, delay)
                self._set_state("offline", _describe(exc))
                self._stop.wait(delay)
                continue
            backoff.reset()
            refused_backoff.reset()
            self._serve(conn)
            if conn.refused:
                self._set_state("refused", conn.reason)
                self._stop.wait(refused_backoff.next_delay())
            elif not self._stop.is_set():
                self._set_state("offline", conn.reason)
                self._stop.wait(backoff.next_delay())
        self._set_state("offline", "edge stopped")

    def _connect(self) -> _Connection:
        s = self.settings
        sock = socket.create_connection((s.host, s.port), timeout=s.connect_timeout_s)
        stream = MessageStream(sock)
        try:
            stream.send(protocol.hello(s.station, s.login, s.token, credential=s.credential))
            reply = stream.recv()
            if reply is None:
                raise ConnectionError("recognizer closed the connection during the handshake")
            if reply.kind in (MessageKind.REFUSE, MessageKind.ERROR):
                raise _Refused(str(reply.header.get("code", "refused")), str(reply.header.get("reason", "")))
            if reply.kind != MessageKind.WELCOME:
                raise protocol.MalformedMessage(f"expected WELCOME, got {reply.kind.name}")
            server_window = reply.get("max_in_flight", int, s.max_in_flight)
            heartbeat_s = reply.get("heartbeat_s", (int, float), s.default_heartbeat_s)
        except BaseException:
            stream.close()
            raise
        window = max(1, min(server_window, s.max_in_flight))
        heartbeat_s = max(0.2, float(heartbeat_s))
        # Receiver wakes at least this often; a sendall blocked this long means the server stopped reading.
        sock.settimeout(max(1.0, heartbeat_s))
        server = str(reply.header.get("server", ""))
        log.info(
            "connected to recognizer %s:%d (%s): window %d, heartbeat %.1f s", s.host, s.port, server, window, heartbeat_s
        )
        return _Connection(stream, window, heartbeat_s, server)

    def _serve(self, conn: _Connection) -> None:
        with self._lock:
            self._conn = conn
            self._connects += 1
        self._set_state("online", "connected")
        receiver = threading.Thread(target=self._receive, args=(conn,), name="link-recv", daemon=True)
        receiver.start()
        try:
            self._send_loop(conn)
        except Exception as exc:  # keep the edge alive whatever one connection did; log it in full
            log.exception("sender failed")
            conn.fail(f"sender failed: {exc}")
        finally:
            conn.fail(conn.reason or "connection closed")
            receiver.join()
            with self._lock:
                self._conn = None
                pending = list(self._pending.values())
            for p in pending:  # nobody will answer these now
                p.answer = {"ok": False, "code": "offline", "reason": f"recognizer offline: {conn.reason}"}
                p.done.set()
            with self._lock:
                verifying = self._verify
            if verifying is not None:  # the recognizer's check state went with the connection
                self._finish_verify(verifying.request_id, {"state": "failed", "reason": "offline",
                                                           "message": f"recognizer offline: {conn.reason}"})
            log.info("disconnected from recognizer: %s", conn.reason)

    def _send_loop(self, conn: _Connection) -> None:
        s = self.settings
        last_seq = 0
        last_tx = time.monotonic()
        told_camera: Optional[str] = None  # the camera state the recognizer last heard from us
        while not self._stop.is_set() and not conn.dead:
            camera = self._camera()
            if camera is not None and camera["state"] != told_camera:  # tell it at once, not at the next heartbeat
                if not self._send(conn, protocol.heartbeat(time.time(), camera)):
                    return
                log.info("told the recognizer: camera %s%s", camera["state"],
                         f" ({camera['error']})" if camera.get("error") else "")
                told_camera, last_tx = camera["state"], time.monotonic()
            if self._wait_for_room(conn):
                frame = self.raw.wait_for_frame(last_seq, timeout=_WAIT_SLICE_S)
                if frame is not None:
                    if last_seq:
                        with self._lock:
                            self._skipped += frame.seq - last_seq - 1
                    last_seq = frame.seq
                    jpeg = encode_jpeg(frame.data, s.jpeg_quality, s.max_width)
                    with conn.cond:
                        conn.in_flight[frame.seq] = time.monotonic()
                    if not self._send(conn, protocol.frame(frame.seq, frame.ts, jpeg)):
                        return
                    last_tx = time.monotonic()
                    with self._lock:
                        self._sent += 1
                    log.debug("frame %d sent (%d bytes)", frame.seq, len(jpeg))
            now = time.monotonic()
            if now - last_tx >= conn.heartbeat_s:
                if not self._send(conn, protocol.heartbeat(time.time(), camera)):
                    return
                last_tx = now
            silence = now - conn.last_rx
            if silence > _DEAD_AFTER_HEARTBEATS * conn.heartbeat_s:
                conn.fail(f"no answer from the recognizer for {silence:.1f} s")

    def _wait_for_room(self, conn: _Connection) -> bool:
        """Wait (bounded) until fewer than `window` frames are in flight; drop ones unanswered for too long."""
        with conn.cond:
            conn.cond.wait_for(lambda: conn.dead or len(conn.in_flight) < conn.window, _WAIT_SLICE_S)
            if len(conn.in_flight) >= conn.window:
                cutoff = time.monotonic() - self.settings.result_timeout_s
                expired = [seq for seq, sent in conn.in_flight.items() if sent < cutoff]
                for seq in expired:
                    del conn.in_flight[seq]
                if expired:
                    log.warning("no result for frames %s after %.0f s; no longer waiting", expired,
                                self.settings.result_timeout_s)
            return not conn.dead and len(conn.in_flight) < conn.window

    @staticmethod
    def _send(conn: _Connection, message: Message) -> bool:
        try:
            conn.stream.send(message)
            return True
        except OSError as exc:
            conn.fail(f"send failed: {_describe(exc)}")
            return False

    # ---- receiver thread ----

    def _receive(self, conn: _Connection) -> None:
        while not conn.dead:
            try:
                message = conn.stream.recv()
            except socket.timeout:
                continue  # the sender judges silence; this only lets us re-check `dead`
            except ProtocolError as exc:
                log.warning("recognizer broke the protocol: %s", exc)
                conn.fail(f"recognizer sent a bad message: {exc}")
                return
            except OSError as exc:
                conn.fail(f"connection lost: {_describe(exc)}")
                return
            if message is None:
                conn.fail("recognizer closed the connection")
                return
            conn.last_rx = time.monotonic()
            try:
                self._handle(conn, message)
            except ProtocolError as exc:
                log.warning("recognizer sent a malformed %s: %s", message.kind.name, exc)
                conn.fail(f"recognizer sent a bad message: {exc}")
                return

    def _handle(self, conn: _Connection, message: Message) -> None:
        kind = message.kind
        if kind == MessageKind.RESULT:
            self._on_result(conn, message)
        elif kind == MessageKind.ENROL_RESULT:
            self._on_enrol_result(message)
        elif kind == MessageKind.VERIFY_RESULT:
            self._on_verify_result(message)
        elif kind == MessageKind.HEARTBEAT:
            log.debug("heartbeat from recognizer")
        elif kind in (MessageKind.REFUSE, MessageKind.ERROR):
            code = str(message.header.get("code", kind.name.lower()))
            reason = str(message.header.get("reason", ""))
            log.warning("recognizer sent %s (%s): %s", kind.name, code, reason)
            prefix = "refused" if kind == MessageKind.REFUSE else "recognizer error"
            conn.fail(f"{prefix}: {reason} ({code})", refused=kind == MessageKind.REFUSE)
        else:
            log.warning("ignoring unexpected %s from recognizer", kind.name)

    def _on_result(self, conn: _Connection, message: Message) -> None:
        seq = message.get("seq", int)
        ts = message.get("ts", (int, float))
        faces = message.get("faces", list, [])
        error = message.header.get("error")
        with conn.cond:
            sent = conn.in_flight.pop(seq, None)
            conn.cond.notify_all()
        now = time.time()
        if 0 < ts <= now:  # the echoed capture time: latency includes capture age and encoding
            latency_ms = (now - ts) * 1000.0
        else:  # a server that did not echo `ts`: fall back to our own send time
            latency_ms = (time.monotonic() - sent) * 1000.0 if sent is not None else 0.0
        if message.payload:
            self.annotated.publish(message.payload, now, meta=faces)  # the faces travel with their picture
        with self._lock:
            self._results += 1
            self._result_rate.tick()
            self._latency_ms = latency_ms
            self._latency_avg_ms = (
                latency_ms if self._latency_avg_ms is None else 0.8 * self._latency_avg_ms + 0.2 * latency_ms
            )
            self._faces = faces
            self._last_result_at = now
            self._last_error = str(error) if error is not None else None
        if error is not None:
            log.info("recognizer could not process frame %d: %s", seq, error)
        log.debug("result %d: %d faces, %.0f ms", seq, len(faces), latency_ms)

    def _on_verify_result(self, message: Message) -> None:
        request_id = message.get("request_id", str)
        state = message.get("state", str)
        progress = _verify_progress(message.header)
        if state == "pending":
            with self._lock:
                if self._verify is not None and self._verify.request_id == request_id:
                    self._verify.progress = progress
            return
        log.info("sign-in face check %s: %s %s", request_id, state, progress.get("reason", ""))
        self._finish_verify(request_id, progress)

    def _on_enrol_result(self, message: Message) -> None:
        request_id = message.get("request_id", str)
        with self._lock:
            pending = self._pending.get(request_id)
        if pending is None:
            log.info("late or unknown enrol answer %s ignored", request_id)
            return
        h = message.header
        pending.answer = {
            "ok": bool(h.get("ok", False)),
            "reason": str(h.get("reason", "")),
            "name": str(h.get("name", "")),
            "count": h.get("count", 0),
        }
        if h.get("code"):
            pending.answer["code"] = str(h["code"])
        box = h.get("box")
        if isinstance(box, list) and len(box) == 4 and all(isinstance(v, int) and not isinstance(v, bool) for v in box):
            pending.answer["box"] = box
        if message.payload:
            pending.answer["crop"] = message.payload  # JPEG of the face the recognizer enrolled
        log.info("enrol answer %s: ok=%s %s", request_id, pending.answer["ok"], pending.answer["reason"])
        pending.done.set()


def _verify_progress(header: dict) -> dict:
    """The JSON-able progress fields of a VERIFY_RESULT header."""
    keys = ("state", "reason", "message", "agreeing", "needed", "blinked", "elapsed_s", "remaining_s", "frames_seen")
    return {k: header[k] for k in keys if k in header}


def _round(value: Optional[float], digits: int = 1) -> Optional[float]:
    return None if value is None else round(value, digits)


def _describe(exc: BaseException) -> str:
    """A short human sentence for a connection failure."""
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (is the recognizer running?)"
    if isinstance(exc, socket.timeout):
        return "timed out"
    return str(exc) or type(exc).__name__
