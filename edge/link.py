"""The edge's connection to the recognizer: the sockets and threads around `edge.link_state.LinkState`.

One manager thread connects (exponential back-off, jittered), runs the handshake and then the sender
loop; one receiver thread per connection reads replies. What to send and when, the in-flight window,
heartbeats, silence, enrolments and face checks are decided by `LinkState` (no I/O, tested without
sockets); this module only moves bytes, waits and calls back. The sender keeps at most `window` frames
in flight (the smaller of the server's `max_in_flight` and ours). While the window is full, newly
captured frames are skipped, never queued: when a slot frees, the *newest* frame goes out, so
round-trip latency stays about one server-processing time however slow the server is.
"""
from __future__ import annotations

import logging
import random
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from edge.frames import LatestFrame
from edge.link_state import (
    Action,
    Close,
    LinkSettings,
    LinkState,
    Publish,
    Refused,
    Send,
    VerifyDone,
    hello,
    read_welcome,
)
from shared.backoff import Backoff
from shared.drawing import draw_faces
from shared.jpeg import encode_jpeg, shrink
from shared.protocol import ProtocolError
from shared.stream import MessageStream
from shared.lognames import who

__all__ = ["LinkSettings", "RecognizerLink"]

log = logging.getLogger(__name__)

_WAIT_SLICE_S = 0.25  # longest a sender wait lasts before it re-checks stop / heartbeat / silence


@dataclass(frozen=True)
class _LiveSocket:
    """A live connection's socket and its number in `LinkState`."""

    stream: MessageStream
    number: int


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
        self.raw = raw
        self.annotated = annotated
        self._rng = rng
        # the camera's state for the recognizer ({"state": "ok"|"lost", "error", "lost_s"}; None: not known yet)
        self._camera = camera if camera is not None else (lambda: None)
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._cond = threading.Condition()  # guards the fields below; notified whenever the state changes
        self._state = LinkState(settings, time.time())
        self._conn: Optional[_LiveSocket] = None
        self._verify_callbacks: dict[str, Callable[[dict], None]] = {}  # request id -> on_done
        # frames sent and not answered yet, as sent (shrunk), by seq: the boxes of their RESULTs are drawn on them
        self._sent_frames: dict[int, np.ndarray] = {}

    @property
    def settings(self) -> LinkSettings:
        with self._cond:
            return self._state.settings

    # ---- lifecycle ----

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("RecognizerLink already started")
        self._thread = threading.Thread(target=self._run, name="link", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Set the stop event, close the live connection and join every thread."""
        self._stop.set()
        with self._cond:
            conn = self._conn
        if conn is not None:
            self._fail(conn, "edge stopping")
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.error("link thread did not stop within %.1f s", timeout)

    @property
    def online(self) -> bool:
        with self._cond:
            return self._state.online

    def offline_reason(self) -> Optional[str]:
        """None while online; otherwise why not (for the page's banner)."""
        with self._cond:
            return None if self._state.online else self._state.reason

    # ---- public operations ----

    def status(self) -> dict:
        """A JSON-able snapshot: connection state and reason, result fps, latency, in-flight, faces."""
        with self._cond:
            return self._state.status(time.monotonic(), time.time())

    def enrol(self, name: str, timeout: float = 10.0, grant: str = "", confirm_lookalike: str = "") -> dict:
        """Send the current raw frame to be enrolled as `name` (with the dashboard's enrol `grant`); wait for the answer.

        Always returns a dict with `ok` and `reason` (and `code` for answers made here: invalid_name,
        offline, no_frame, timeout; or the recognizer's refusal code, e.g. no_grant, grant_used); on success
        also `box` (in the sent frame) and `crop` (JPEG bytes of the enrolled face) when the recognizer sent them.
        """
        frame = self.raw.latest()
        jpeg = encode_jpeg(frame.data, self.settings.enrol_jpeg_quality) if frame is not None else None
        request_id = uuid.uuid4().hex
        with self._cond:
            asked = self._state.ask_enrol(request_id, name, jpeg, grant, confirm_lookalike)
            conn = self._conn  # live whenever ask_enrol sends: both change under this lock
        if isinstance(asked, dict):  # answered here: invalid name, offline, no frame
            return asked
        name = str(asked.message.header["name"])  # as validated
        try:
            if conn is None:
                return _offline_answer(name, "not connected")
            conn.stream.send(asked.message)
            with self._cond:
                self._cond.wait_for(lambda: self._state.enrol_answer(request_id) is not None, timeout)
                answer = self._state.enrol_answer(request_id)
            if answer is None:
                return {"ok": False, "code": "timeout", "reason": f"the recognizer did not answer within {timeout:g} s",
                        "name": name}
            return answer
        except OSError as exc:
            self._fail(conn, f"send failed: {exc}")
            return _offline_answer(name, str(exc))
        finally:
            with self._cond:
                self._state.forget_enrol(request_id)

    def set_login(self, login: str) -> None:
        """Change the logged-in evaluator: used by the next HELLO and sent now as SESSION when online."""
        self._apply(lambda state: state.set_login(login))
        log.info("login set to %s", who(self.settings.login))

    def verify(self, identity: str, frames: int, timeout_s: float, on_done: Callable[[dict], None]) -> Optional[str]:
        """Ask the recognizer to check the next frames against `identity` only; returns the request id.

        Returns None (and calls nothing) when the recognizer is offline. `on_done(progress)` is called
        once, from a link thread, with the final progress dict (state "passed" or "failed", reason).
        A check already running is cancelled first (its `on_done` gets reason "cancelled").
        """
        request_id = uuid.uuid4().hex
        with self._cond:
            actions = self._state.ask_verify(request_id, identity, frames, timeout_s, time.monotonic())
            if not actions:
                return None
            self._verify_callbacks[request_id] = on_done
            conn = self._conn
        if not self._carry_out(conn, actions):
            offline = {"state": "failed", "reason": "offline", "message": "recognizer offline"}
            self._apply(lambda state: state.finish_verify(request_id, offline))
        return request_id

    def verify_progress(self, request_id: str) -> Optional[dict]:
        """The latest progress of the check `request_id`, or None when it is not the current one."""
        self._apply(lambda state: state.expire_verify(time.monotonic()))
        with self._cond:
            return self._state.verify_progress(request_id)

    def cancel_verify(self) -> None:
        """Cancel the current check, if any (its on_done is called with reason 'cancelled')."""
        self._apply(LinkState.cancel_verify)

    # ---- feeding the state, carrying out what it decided ----

    def _apply(self, event: Callable[[LinkState], list[Action]]) -> bool:
        """Feed one event to the state under the lock, wake the waiters, then carry out its actions (lock released).

        False when a Send failed. Actions always concern the state's live connection, which is `_conn`.
        """
        with self._cond:
            actions = event(self._state)
            conn = self._conn
            self._cond.notify_all()  # a freed window slot, an enrolment answered, a connection dead
        return self._carry_out(conn, actions)

    def _dead(self, conn: _LiveSocket) -> bool:
        with self._cond:
            return self._state.dead(conn.number)

    def _carry_out(self, conn: Optional[_LiveSocket], actions: list[Action]) -> bool:
        """Do `actions` in order (never holding the lock); False when a Send failed (later Sends are skipped)."""
        ok = True
        for action in actions:
            if isinstance(action, Send):
                if ok and conn is not None:
                    ok = self._send(conn, action)
                else:
                    ok = False
            elif isinstance(action, Close):
                if conn is not None:
                    conn.stream.close()
            elif isinstance(action, Publish):
                jpeg = action.jpeg or self._draw(action.seq, action.faces)
                if jpeg:
                    self.annotated.publish(jpeg, action.wall, meta=action.faces)  # the faces travel with their picture
            elif isinstance(action, VerifyDone):
                with self._cond:
                    on_done = self._verify_callbacks.pop(action.request_id, None)
                if on_done is None:
                    continue
                try:
                    on_done(action.progress)
                except Exception:  # the callback's bug must not kill the receiver thread; logged with its trace
                    log.exception("sign-in callback failed for %s", action.request_id)
        return ok

    def _send(self, conn: _LiveSocket, action: Send) -> bool:
        try:
            conn.stream.send(action.message)
            return True
        except OSError as exc:
            self._fail(conn, f"send failed: {_describe(exc)}")
            return False

    def _fail(self, conn: _LiveSocket, reason: str) -> None:
        """Mark `conn` dead (the first reason wins) and close its socket, which unblocks both threads."""
        self._apply(lambda state: state.close(conn.number, reason))

    # ---- manager thread ----

    def _run(self) -> None:
        s = self.settings
        backoff = Backoff(s.backoff_initial_s, s.backoff_max_s, s.backoff_jitter, rng=self._rng)
        refused_backoff = Backoff(s.refused_backoff_initial_s, s.refused_backoff_max_s, s.backoff_jitter, rng=self._rng)
        with self._cond:
            self._state.connecting(time.time())
        while not self._stop.is_set():
            # After a failure the state stays "offline"/"refused" with its reason while we retry.
            try:
                conn = self._connect()
            except Refused as exc:
                delay = refused_backoff.next_delay()
                log.warning("recognizer %s:%d refused us: %s; retrying in %.1f s", s.host, s.port, exc, delay)
                with self._cond:
                    self._state.connect_failed(f"refused: {exc.reason} ({exc.code})", True, time.time())
                self._stop.wait(delay)
                continue
            except (OSError, ProtocolError) as exc:
                delay = backoff.next_delay()
                log.info("recognizer %s:%d unreachable (%s); retrying in %.1f s", s.host, s.port, exc, delay)
                with self._cond:
                    self._state.connect_failed(_describe(exc), False, time.time())
                self._stop.wait(delay)
                continue
            backoff.reset()
            refused_backoff.reset()
            refused = self._serve(conn)
            if refused:
                self._stop.wait(refused_backoff.next_delay())
            elif not self._stop.is_set():
                self._stop.wait(backoff.next_delay())
        with self._cond:
            self._state.stopped(time.time())

    def _connect(self) -> _LiveSocket:
        s = self.settings
        sock = socket.create_connection((s.host, s.port), timeout=s.connect_timeout_s)
        stream = MessageStream(sock)
        try:
            stream.send(hello(s))
            welcome = read_welcome(stream.recv(), s)
        except BaseException:
            stream.close()
            raise
        # Receiver wakes at least this often; a sendall blocked this long means the server stopped reading.
        sock.settimeout(max(1.0, welcome.heartbeat_s))
        log.info("connected to recognizer %s:%d (%s): window %d, heartbeat %.1f s", s.host, s.port, welcome.server,
                 welcome.window, welcome.heartbeat_s)
        with self._cond:
            self._conn = _LiveSocket(stream, self._state.connected(welcome, time.monotonic(), time.time()))
            return self._conn

    def _serve(self, conn: _LiveSocket) -> bool:
        """Run one connection until it ends; True when the recognizer refused us."""
        receiver = threading.Thread(target=self._receive, args=(conn,), name="link-recv", daemon=True)
        receiver.start()
        try:
            self._send_loop(conn)
        except Exception as exc:  # keep the edge alive whatever one connection did; log it in full
            log.exception("sender failed")
            self._fail(conn, f"sender failed: {exc}")
        finally:
            self._fail(conn, "connection closed")
            receiver.join()
            with self._cond:
                self._conn = None
                reason, refused, actions = self._state.disconnected(conn.number, self._stop.is_set(), time.time())
                self._cond.notify_all()  # enrolments waiting get their "offline" answer
            self._carry_out(None, actions)
            log.info("disconnected from recognizer: %s", reason)
        return refused

    def _send_loop(self, conn: _LiveSocket) -> None:
        s = self.settings
        while not self._stop.is_set() and not self._dead(conn):
            camera = self._camera()
            if not self._apply(lambda state: state.report_camera(camera, time.monotonic(), time.time())):
                return
            if self._wait_for_room(conn):
                with self._cond:
                    last_seq, deadline = self._state.last_seq, self._state.deadline()
                    pace_s = self._state.send_wait_s(time.monotonic())  # the rate the recognizer can serve us at
                wait_s = _WAIT_SLICE_S if deadline is None else min(_WAIT_SLICE_S, max(0.0, deadline - time.monotonic()))
                frame = None
                if pace_s > 0:
                    self._stop.wait(min(pace_s, wait_s))
                else:
                    frame = self.raw.wait_for_frame(last_seq, timeout=wait_s)
                if frame is not None:
                    picture = shrink(frame.data, s.max_width)
                    jpeg = encode_jpeg(picture, s.jpeg_quality)
                    if s.edge_draws:
                        self._keep_sent(frame.seq, picture)
                    if not self._apply(lambda state: state.send_frame(frame.seq, frame.ts, jpeg, time.monotonic())):
                        return
            if not self._apply(lambda state: state.tick(time.monotonic(), time.time())):
                return

    def _keep_sent(self, seq: int, picture: np.ndarray) -> None:
        """Keep a sent frame until its RESULT (at most a window's worth and a few: older ones are unanswered)."""
        with self._cond:
            self._sent_frames[seq] = picture
            while len(self._sent_frames) > self._state.settings.max_in_flight + 4:
                del self._sent_frames[min(self._sent_frames)]

    def _draw(self, seq: int, faces: list) -> bytes:
        """The frame sent as `seq` with `faces` drawn on it (as the recognizer draws them), as the page's JPEG;
        b"" when that frame is no longer kept. Frames sent before it are dropped: their RESULTs came or never will."""
        with self._cond:
            picture = self._sent_frames.pop(seq, None)
            for old in [k for k in self._sent_frames if k < seq]:
                del self._sent_frames[old]
        if picture is None:
            return b""
        return encode_jpeg(draw_faces(picture.copy(), faces), self.settings.jpeg_quality)

    def _wait_for_room(self, conn: _LiveSocket) -> bool:
        """Wait (bounded) until fewer than `window` frames are in flight; drop ones unanswered for too long."""
        state = self._state
        with self._cond:
            self._cond.wait_for(lambda: state.dead(conn.number) or state.ready_to_send, _WAIT_SLICE_S)
            return not state.dead(conn.number) and state.make_room(time.monotonic())

    # ---- receiver thread ----

    def _receive(self, conn: _LiveSocket) -> None:
        while not self._dead(conn):
            try:
                message = conn.stream.recv()
            except socket.timeout:
                continue  # the sender judges silence; this only lets us re-check `dead`
            except ProtocolError as exc:
                log.warning("recognizer broke the protocol: %s", exc)
                self._fail(conn, f"recognizer sent a bad message: {exc}")
                return
            except OSError as exc:
                self._fail(conn, f"connection lost: {_describe(exc)}")
                return
            if message is None:
                self._fail(conn, "recognizer closed the connection")
                return
            self._apply(lambda state: state.receive(message, time.monotonic(), time.time()))


def _offline_answer(name: str, why: str) -> dict:
    return {"ok": False, "code": "offline", "reason": f"recognizer offline: {why}", "name": name}


def _describe(exc: BaseException) -> str:
    """A short human sentence for a connection failure."""
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (is the recognizer running?)"
    if isinstance(exc, socket.timeout):
        return "timed out"
    return str(exc) or type(exc).__name__
