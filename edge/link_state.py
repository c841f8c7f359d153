"""The edge's side of the link to the recognizer as a state machine: no sockets, threads or clocks (the h11 way).

`LinkState` takes events — handshake done, a message received, time passing, a frame offered, an
enrolment or face check asked, the connection lost — each with the time passed in (`now`: monotonic
seconds; `wall`: POSIX seconds), and returns what the caller must do: `Send` a message, `Close` the
connection, `Publish` an annotated picture, tell a face check's owner it is `VerifyDone`. It owns the
in-flight window, the enrolments and the face check waiting by request id, the heartbeat and silence
deadlines, the camera state told to the recognizer, and the online/offline/refused state with its reason.
`edge/link.py` is the socket-and-thread shell around it. Not thread-safe: the shell holds one lock
around every call.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Optional, Union

from edge.frames import RateMeter
from shared import protocol
from shared.alerts import OUTBOX_STATES
from shared.names import InvalidName, validate_name
from shared.pacing import Pacer, rate_from_peer
from shared.protocol import Message, MessageKind, ProtocolError
from shared.results import BadFaceResult, FaceResult, faces_from_wire, faces_to_wire

log = logging.getLogger(__name__)

DEAD_AFTER_HEARTBEATS = 3.0  # this many heartbeat periods without a byte from the recognizer: a dead link
VERIFY_GRACE_S = 5.0  # the recognizer times a face check from its first frame; the edge allows it this much more


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
    backoff_initial_s: float = 0.25  # first retry after a lost connection: short, a pool's balancer has another node
    backoff_max_s: float = 10.0
    refused_backoff_initial_s: float = 5.0  # after a REFUSE (bad token/version): retry, but slowly
    refused_backoff_max_s: float = 60.0
    backoff_jitter: float = 0.2  # each delay +/- this fraction, so desks that lost the server do not return together
    default_heartbeat_s: float = 5.0  # when the WELCOME does not say
    result_timeout_s: float = 10.0  # an unanswered frame stops counting as in flight after this
    enrol_jpeg_quality: int = 95
    # the edge draws the boxes on the frames it sent, from RESULT's faces, and asks the recognizer for RESULTs
    # without the annotated JPEG (HELLO `annotate`: false; docs/protocol.md): the recognizer saves ~1.2 ms of CPU
    # a frame, the link ~40 KB. A recognizer that sends the picture anyway (older ones) is shown as it comes.
    edge_draws: bool = True


# ---- actions: what the shell must do ----

@dataclass(frozen=True)
class Send:
    """Send this message on the live connection."""

    message: Message


@dataclass(frozen=True)
class Close:
    """The connection is dead (the state already knows why): close the socket so both threads stop."""

    reason: str


@dataclass(frozen=True)
class Publish:
    """An annotated JPEG from the recognizer, with the faces drawn on it, received at `wall`; `jpeg` empty: the
    recognizer sent none (we asked so), draw `faces` on the frame sent as `seq`."""

    jpeg: bytes
    wall: float
    faces: list[FaceResult]
    seq: int = 0


@dataclass(frozen=True)
class VerifyDone:
    """The face check `request_id` ended: tell its owner `progress` (state "passed" or "failed", reason)."""

    request_id: str
    progress: dict


Action = Union[Send, Close, Publish, VerifyDone]


# ---- the handshake ----

class Refused(Exception):
    """The recognizer answered the HELLO with REFUSE or ERROR."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"refused ({code}): {reason}")
        self.code, self.reason = code, reason


@dataclass(frozen=True)
class Welcome:
    """What the handshake agreed: frames in flight at most, heartbeat period (s), the server's name, and the
    frames/s the server can serve this station at (0: no limit said; each RESULT may update it)."""

    window: int
    heartbeat_s: float
    server: str
    max_fps: float = 0.0


def hello(settings: LinkSettings) -> Message:
    """The HELLO that opens a connection."""
    return protocol.hello(settings.station, settings.login, settings.token, credential=settings.credential,
                          annotate=not settings.edge_draws)


def read_welcome(reply: Optional[Message], settings: LinkSettings) -> Welcome:
    """The server's answer to HELLO (None: it closed); Refused, ConnectionError or MalformedMessage otherwise."""
    if reply is None:
        raise ConnectionError("recognizer closed the connection during the handshake")
    if reply.kind in (MessageKind.REFUSE, MessageKind.ERROR):
        raise Refused(str(reply.header.get("code", "refused")), str(reply.header.get("reason", "")))
    if reply.kind != MessageKind.WELCOME:
        raise protocol.MalformedMessage(f"expected WELCOME, got {reply.kind.name}")
    server_window = reply.get("max_in_flight", int, settings.max_in_flight)
    heartbeat_s = reply.get("heartbeat_s", (int, float), settings.default_heartbeat_s)
    return Welcome(window=max(1, min(server_window, settings.max_in_flight)),
                   heartbeat_s=max(0.2, float(heartbeat_s)), server=str(reply.header.get("server", "")),
                   max_fps=rate_from_peer(reply.header.get("max_fps")))


# ---- the state ----

@dataclass
class _Connection:
    """One live connection: its number, what the handshake agreed, frames in flight, traffic times."""

    number: int
    welcome: Welcome
    last_rx: float  # monotonic time of the last message received
    last_tx: float  # monotonic time of the last message sent by the sender (frame or heartbeat)
    in_flight: dict[int, float] = field(default_factory=dict)  # seq -> monotonic send time
    last_seq: int = 0  # the last frame offered (0: none yet on this connection)
    camera: Optional[dict] = None  # the camera state last read, carried by each heartbeat
    pacer: Pacer = field(default_factory=Pacer)  # frames spaced to the rate the server can serve us at
    told_camera: Optional[str] = None  # the camera state the recognizer last heard from us
    dead: bool = False
    reason: str = ""
    refused: bool = False


@dataclass
class _PendingVerify:
    """A sign-in face check sent to the recognizer and its latest progress."""

    request_id: str
    identity: str
    deadline: float  # monotonic; the edge gives up even if the recognizer never answers
    progress: dict = field(default_factory=lambda: {"state": "pending", "reason": "", "message": "", "agreeing": 0})


class LinkState:
    """The link's state; every method takes the time and returns the actions the shell must carry out."""

    def __init__(self, settings: LinkSettings, wall: float) -> None:
        self.settings = settings
        self._conn: Optional[_Connection] = None
        self._connects = 0
        self._enrols: dict[str, Optional[dict]] = {}  # request id -> the answer (None until it comes)
        self._verify: Optional[_PendingVerify] = None  # at most one sign-in face check per desk
        self._state, self._reason, self._since = "offline", "not started", wall
        self._result_rate = RateMeter()
        self._latency_ms: Optional[float] = None
        self._latency_avg_ms: Optional[float] = None
        self._faces: list[FaceResult] = []
        self._last_result_at: Optional[float] = None
        self._last_error: Optional[str] = None
        self._alerts: Optional[str] = None  # the recognizer's alert outbox state, from its heartbeats
        self._sent = self._skipped = self._results = 0

    # ---- what the shell asks ----

    @property
    def online(self) -> bool:
        return self._state == "online"

    @property
    def reason(self) -> str:
        """Why the link is in its state ("connected" while online)."""
        return self._reason

    @property
    def connection(self) -> Optional[int]:
        """The live connection's number, or None between connections."""
        return self._conn.number if self._conn is not None else None

    def dead(self, number: Optional[int] = None) -> bool:
        """Whether connection `number` (default: the live one) has ended or is no longer the live one."""
        conn = self._conn
        return conn is None or conn.dead or (number is not None and conn.number != number)

    @property
    def ready_to_send(self) -> bool:
        """A frame may go now: the connection is live and fewer than `window` frames are unanswered."""
        conn = self._conn
        return conn is not None and not conn.dead and len(conn.in_flight) < conn.welcome.window

    def send_wait_s(self, now: float) -> float:
        """Seconds until the next frame may go at the rate the recognizer asked for (0: now, or no connection)."""
        conn = self._conn
        return conn.pacer.wait_s(now) if conn is not None and not conn.dead else 0.0

    @property
    def last_seq(self) -> int:
        """The last frame offered on this connection (0: none yet): the sender waits for a newer one."""
        return self._conn.last_seq if self._conn is not None else 0

    def deadline(self) -> Optional[float]:
        """The monotonic time by which `tick` must be called (a heartbeat due, or the silence limit); None: no connection."""
        conn = self._conn
        if conn is None or conn.dead:
            return None
        hb = conn.welcome.heartbeat_s
        return min(conn.last_tx + hb, conn.last_rx + DEAD_AFTER_HEARTBEATS * hb)

    def status(self, now: float, wall: float) -> dict:
        """A JSON-able snapshot: connection state and reason, result fps, latency, in-flight, faces."""
        s, conn = self.settings, self._conn
        return {
            "recognizer": f"{s.host}:{s.port}",
            "state": self._state,
            "online": self._state == "online",
            "reason": self._reason,
            "since": self._since,
            "server": conn.welcome.server if conn is not None else None,
            "station": s.station,
            "login": s.login,
            "fps": round(self._result_rate.rate(now), 2),
            "latency_ms": _round(self._latency_ms),
            "latency_avg_ms": _round(self._latency_avg_ms),
            "in_flight": len(conn.in_flight) if conn is not None else 0,
            "window": conn.welcome.window if conn is not None else 0,
            "max_fps": conn.pacer.rate if conn is not None else 0.0,
            "frames_sent": self._sent,
            "frames_skipped": self._skipped,
            "results": self._results,
            "connects": self._connects,
            "faces": faces_to_wire(self._faces),
            "last_result_age_s": _round(wall - self._last_result_at, 3) if self._last_result_at is not None else None,
            "last_error": self._last_error,
            "alerts": self._alerts,  # the recognizer's alert outbox: ok | disk_full | degraded (None: not said)
        }

    # ---- connecting ----

    def _set_state(self, state: str, reason: str, wall: float) -> None:
        if (state, reason) != (self._state, self._reason):
            self._state, self._reason, self._since = state, reason, wall

    def connecting(self, wall: float) -> None:
        """The shell starts connecting."""
        self._set_state("connecting", f"connecting to {self.settings.host}:{self.settings.port}", wall)

    def connect_failed(self, reason: str, refused: bool, wall: float) -> None:
        """A connection attempt failed (refused: the recognizer said no); the state keeps the reason while retrying."""
        self._set_state("refused" if refused else "offline", reason, wall)

    def stopped(self, wall: float) -> None:
        self._set_state("offline", "edge stopped", wall)

    def connected(self, welcome: Welcome, now: float, wall: float) -> int:
        """The handshake succeeded; returns the new connection's number."""
        self._connects += 1
        self._conn = _Connection(self._connects, welcome, last_rx=now, last_tx=now, pacer=Pacer(welcome.max_fps))
        self._alerts = None  # a new recognizer says its own
        self._set_state("online", "connected", wall)
        return self._connects

    def close(self, number: int, reason: str, refused: bool = False) -> list[Action]:
        """Connection `number` failed (I/O error, the edge stopping…): Close it unless it is already dead or stale."""
        conn = self._conn
        if conn is None or conn.number != number or conn.dead:
            return []
        conn.dead, conn.reason, conn.refused = True, reason, refused  # the first reason wins
        return [Close(reason)]

    def disconnected(self, number: int, stopping: bool, wall: float) -> tuple[str, bool, list[Action]]:
        """Connection `number` is closed and its receiver gone: (reason, refused, actions).

        Enrolments still waiting are answered "offline"; a face check running fails (the recognizer's
        state for it went with the connection).
        """
        conn = self._conn
        if conn is None or conn.number != number:
            return "", False, []
        self._conn = None
        reason = conn.reason or "connection closed"
        for request_id, answer in self._enrols.items():
            if answer is None:  # nobody will answer these now
                self._enrols[request_id] = {"ok": False, "code": "offline", "reason": f"recognizer offline: {reason}"}
        actions = []
        if self._verify is not None:
            actions = self.finish_verify(self._verify.request_id, {"state": "failed", "reason": "offline",
                                                                   "message": f"recognizer offline: {reason}"})
        if conn.refused:
            self._set_state("refused", reason, wall)
        elif not stopping:
            self._set_state("offline", reason, wall)
        return reason, conn.refused, actions

    # ---- the sender: camera, frames, heartbeats, silence ----

    def report_camera(self, camera: Optional[dict], now: float, wall: float) -> list[Action]:
        """The camera's state now ({"state": "ok"|"lost", "error", "lost_s"}; None: not known yet).

        A change is told to the recognizer at once in a HEARTBEAT, not at the next one.
        """
        conn = self._conn
        if conn is None or conn.dead:
            return []
        conn.camera = camera
        if camera is None or camera["state"] == conn.told_camera:
            return []
        log.info("telling the recognizer: camera %s%s", camera["state"],
                 f" ({camera['error']})" if camera.get("error") else "")
        conn.told_camera, conn.last_tx = camera["state"], now
        return [Send(protocol.heartbeat(wall, camera))]

    def make_room(self, now: float) -> bool:
        """With the window full, stop waiting for frames unanswered for `result_timeout_s`; then `ready_to_send`."""
        conn = self._conn
        if conn is not None and len(conn.in_flight) >= conn.welcome.window:
            cutoff = now - self.settings.result_timeout_s
            expired = [seq for seq, sent in conn.in_flight.items() if sent < cutoff]
            for seq in expired:
                del conn.in_flight[seq]
            if expired:
                log.warning("no result for frames %s after %.0f s; no longer waiting", expired,
                            self.settings.result_timeout_s)
        return self.ready_to_send

    def send_frame(self, seq: int, ts: float, jpeg: bytes, now: float) -> list[Action]:
        """Frame `seq` (captured at wall time `ts`) goes out; frames between the last one sent and it were skipped."""
        conn = self._conn
        if conn is None or conn.dead:
            return []
        if conn.last_seq:
            self._skipped += seq - conn.last_seq - 1
        conn.last_seq = seq
        conn.in_flight[seq] = now
        conn.last_tx = now
        conn.pacer.sent(now)
        self._sent += 1
        log.debug("frame %d sent (%d bytes)", seq, len(jpeg))
        return [Send(protocol.frame(seq, ts, jpeg))]

    def tick(self, now: float, wall: float) -> list[Action]:
        """Time passed: a HEARTBEAT when nothing was sent for `heartbeat_s`; Close after 3 x that without a byte."""
        conn = self._conn
        if conn is None or conn.dead:
            return []
        hb = conn.welcome.heartbeat_s
        actions: list[Action] = []
        if now - conn.last_tx >= hb:
            actions.append(Send(protocol.heartbeat(wall, conn.camera)))
            conn.last_tx = now
        silence = now - conn.last_rx
        if silence > DEAD_AFTER_HEARTBEATS * hb:
            actions += self.close(conn.number, f"no answer from the recognizer for {silence:.1f} s")
        return actions

    # ---- the receiver ----

    def receive(self, message: Message, now: float, wall: float) -> list[Action]:
        """A message from the recognizer; one that breaks the protocol closes the connection.

        Handled even when the connection was just closed from our side: an answer that made it is used.
        """
        conn = self._conn
        if conn is None:
            return []
        conn.last_rx = now
        kind = message.kind
        try:
            if kind == MessageKind.RESULT:
                return self._on_result(conn, message, now, wall)
            if kind == MessageKind.ENROL_RESULT:
                self._on_enrol_result(message)
            elif kind == MessageKind.VERIFY_RESULT:
                return self._on_verify_result(message)
            elif kind == MessageKind.HEARTBEAT:
                log.debug("heartbeat from recognizer")
                alerts = message.header.get("alerts")
                if alerts in OUTBOX_STATES and alerts != self._alerts:
                    (log.info if alerts == "ok" else log.warning)("recognizer's alert outbox: %s", alerts)
                    self._alerts = alerts
            elif kind in (MessageKind.REFUSE, MessageKind.ERROR):
                code = str(message.header.get("code", kind.name.lower()))
                reason = str(message.header.get("reason", ""))
                if code == "draining":  # a pool node stopping: reconnect (through the balancer) to another
                    log.info("recognizer node is draining: %s", reason)
                    return self.close(conn.number, f"recognizer node stopping, moving to another ({reason})")
                log.warning("recognizer sent %s (%s): %s", kind.name, code, reason)
                prefix = "refused" if kind == MessageKind.REFUSE else "recognizer error"
                return self.close(conn.number, f"{prefix}: {reason} ({code})", refused=kind == MessageKind.REFUSE)
            else:
                log.warning("ignoring unexpected %s from recognizer", kind.name)
        except ProtocolError as exc:
            log.warning("recognizer sent a malformed %s: %s", kind.name, exc)
            return self.close(conn.number, f"recognizer sent a bad message: {exc}")
        return []

    def _on_result(self, conn: _Connection, message: Message, now: float, wall: float) -> list[Action]:
        seq = message.get("seq", int)
        ts = message.get("ts", (int, float))
        try:
            faces = faces_from_wire(message.get("faces", list, []))
        except BadFaceResult as exc:  # a ProtocolError: the link closes as for any malformed message
            raise protocol.MalformedMessage(f"RESULT: {exc}") from None
        error = message.header.get("error")
        if "max_fps" in message.header:  # the recognizer's share for us changed with its load or station count
            conn.pacer.set_rate(rate_from_peer(message.header["max_fps"]))
        sent = conn.in_flight.pop(seq, None)
        if 0 < ts <= wall:  # the echoed capture time: latency includes capture age and encoding
            latency_ms = (wall - ts) * 1000.0
        else:  # a server that did not echo `ts`: fall back to our own send time
            latency_ms = (now - sent) * 1000.0 if sent is not None else 0.0
        self._results += 1
        self._result_rate.tick(now)
        self._latency_ms = latency_ms
        self._latency_avg_ms = latency_ms if self._latency_avg_ms is None else 0.8 * self._latency_avg_ms + 0.2 * latency_ms
        self._faces = faces
        self._last_result_at = wall
        self._last_error = str(error) if error is not None else None
        if error is not None:
            log.info("recognizer could not process frame %d: %s", seq, error)
        log.debug("result %d: %d faces, %.0f ms", seq, len(faces), latency_ms)
        # the faces travel with their picture
        if message.payload:
            return [Publish(message.payload, wall, faces, seq)]
        return [Publish(b"", wall, faces, seq)] if error is None and self.settings.edge_draws else []

    # ---- enrolment ----

    def ask_enrol(self, request_id: str, name: str, jpeg: Optional[bytes], grant: str = "",
                  confirm_lookalike: str = "") -> Union[dict, Send]:
        """Enrol the face in `jpeg` (None: no camera frame yet) as `name`: the Send, or an answer made here.

        Answers made here have `ok` False and `code` invalid_name, offline or no_frame. After the Send,
        `enrol_answer(request_id)` gives the recognizer's answer once it came; `forget_enrol` ends the wait.
        """
        try:
            name = validate_name(name)
        except InvalidName as exc:
            return {"ok": False, "code": "invalid_name", "reason": str(exc), "name": str(name)}
        if not self.online:
            return {"ok": False, "code": "offline", "reason": f"recognizer offline: {self._reason}", "name": name}
        if jpeg is None:
            return {"ok": False, "code": "no_frame", "reason": "no camera frame yet", "name": name}
        self._enrols[request_id] = None
        log.info("enrol request %s for %r (%d bytes)", request_id, name, len(jpeg))
        return Send(protocol.enrol(request_id, name, jpeg, grant=grant, confirm_lookalike=confirm_lookalike))

    def enrol_answer(self, request_id: str) -> Optional[dict]:
        """The answer to enrolment `request_id`, or None while it is awaited."""
        return self._enrols.get(request_id)

    def forget_enrol(self, request_id: str) -> None:
        """The asker stopped waiting (answered, timed out, or the send failed); a later answer is ignored."""
        self._enrols.pop(request_id, None)

    def _on_enrol_result(self, message: Message) -> None:
        request_id = message.get("request_id", str)
        if request_id not in self._enrols:
            log.info("late or unknown enrol answer %s ignored", request_id)
            return
        h = message.header
        answer = {
            "ok": bool(h.get("ok", False)),
            "reason": str(h.get("reason", "")),
            "name": str(h.get("name", "")),
            "count": h.get("count", 0),
        }
        if h.get("code"):
            answer["code"] = str(h["code"])
        box = h.get("box")
        if isinstance(box, list) and len(box) == 4 and all(isinstance(v, int) and not isinstance(v, bool) for v in box):
            answer["box"] = box
        alike = h.get("lookalike")
        if isinstance(alike, dict) and isinstance(alike.get("name"), str) and isinstance(alike.get("distance"), (int, float)):
            answer["lookalike"] = {"name": alike["name"][:64], "distance": float(alike["distance"])}
        if message.payload:
            answer["crop"] = message.payload  # JPEG of the face the recognizer enrolled (or refused as a lookalike)
        log.info("enrol answer %s: ok=%s %s", request_id, answer["ok"], answer["reason"])
        self._enrols[request_id] = answer

    # ---- the sign-in face check ----

    def ask_verify(self, request_id: str, identity: str, frames: int, timeout_s: float, now: float) -> list[Action]:
        """Check the next `frames` frames against `identity` only (InvalidName for a bad one).

        Returns [] when offline (nothing started). A check already running is cancelled first (its owner
        is told reason "cancelled").
        """
        identity = validate_name(identity, "identity")
        if not self.online:
            return []
        actions = self.cancel_verify()
        self._verify = _PendingVerify(request_id, identity, now + timeout_s + VERIFY_GRACE_S)
        log.info("sign-in face check %s started for %r", request_id, identity)
        return actions + [Send(protocol.verify(request_id, identity, frames, timeout_s))]

    def verify_progress(self, request_id: str) -> Optional[dict]:
        """The latest progress of the check `request_id`, or None when it is not the current one."""
        v = self._verify
        return dict(v.progress) if v is not None and v.request_id == request_id else None

    def cancel_verify(self) -> list[Action]:
        """Cancel the current check, if any: VERIFY_CANCEL to the recognizer when online, and its owner is told."""
        v = self._verify
        if v is None:
            return []
        actions: list[Action] = [Send(protocol.verify_cancel(v.request_id))] if self.online else []
        return actions + self.finish_verify(v.request_id, {"state": "failed", "reason": "cancelled",
                                                           "message": "cancelled"})

    def expire_verify(self, now: float) -> list[Action]:
        """Give up on a check the recognizer did not finish by its deadline."""
        v = self._verify
        if v is None or now <= v.deadline:
            return []
        return self.finish_verify(v.request_id, {"state": "failed", "reason": "timed_out",
                                                 "message": "the recognizer did not finish the face check in time"})

    def finish_verify(self, request_id: str, progress: dict) -> list[Action]:
        """End check `request_id` (when it is the current one) with `progress`."""
        v = self._verify
        if v is None or v.request_id != request_id:
            return []
        v.progress = progress
        self._verify = None
        return [VerifyDone(request_id, progress)]

    def _on_verify_result(self, message: Message) -> list[Action]:
        request_id = message.get("request_id", str)
        state = message.get("state", str)
        progress = _verify_progress(message.header)
        if state == "pending":
            if self._verify is not None and self._verify.request_id == request_id:
                self._verify.progress = progress
            return []
        log.info("sign-in face check %s: %s %s", request_id, state, progress.get("reason", ""))
        return self.finish_verify(request_id, progress)

    # ---- the login ----

    def set_login(self, login: str) -> list[Action]:
        """A new evaluator logged in (InvalidName for a bad name): used by the next HELLO, sent now as SESSION when online."""
        login = validate_name(login, "login") if login else ""
        self.settings = replace(self.settings, login=login)
        return [Send(protocol.session(login))] if self.online else []


def _verify_progress(header: dict) -> dict:
    """The JSON-able progress fields of a VERIFY_RESULT header."""
    keys = ("state", "reason", "message", "agreeing", "needed", "blinked", "elapsed_s", "remaining_s", "frames_seen")
    return {k: header[k] for k in keys if k in header}


def _round(value: Optional[float], digits: int = 1) -> Optional[float]:
    return None if value is None else round(value, digits)
