"""TCP server on :8002: one thread per station, each with its own pipeline; a bad station only hurts itself.

Connections are accepted and handshaken by `recognizer.server.gate` on one thread (bounded, with a deadline);
only a station whose HELLO passed gets a thread here.

Back-pressure instead of queues: a station thread reads its next frame only after answering the
previous one, and the edge keeps at most `max_in_flight` frames outstanding, so nothing piles up
when the server is slower than the camera.
"""
from __future__ import annotations

import hmac
import itertools
import logging
import socket
import threading
import time
from dataclasses import dataclass
from typing import Callable, Optional, Protocol

from recognizer.identity.enrol import Enroller
from recognizer.identity.gallery import Provenance
from recognizer.identity.index import IndexStore
from recognizer.server.gate import FailureDelay, HandshakeGate, LogLimiter, Refusal
from recognizer.server.hangup import HangupWatch, keep_alive, peer_hung_up
from recognizer.server.pacing import ControlParams, FairShare, PacingParams
from recognizer.server.trust import Admission, Trust, TrustConfig, TrustRefusal
from recognizer.settings import check_section
from recognizer.station.pipeline import StationPipeline
from recognizer.station.session import CameraChanged, Enrol, FrameProcessed, Send, StationSession
from recognizer.station.types import FrameOutcome, StationSnapshot
from shared import protocol
from shared.log_limit import RateLimitedLog
from shared.lognames import who
from shared.names import InvalidName, validate_login, validate_name
from shared.protocol import Message, MessageKind, ProtocolError
from shared.stream import MessageStream

log = logging.getLogger(__name__)

SERVER_NAME = "facemon-recognizer/0.1"


@dataclass(frozen=True)
class ServerConfig:
    """Network behaviour. Times in seconds; sizes in bytes."""

    host: str = "0.0.0.0"
    port: int = 8002
    token: str = ""
    max_stations: int = 32
    max_stations_per_address: int = 8  # stations admitted without their own credential per address (0: no limit)
    max_message: int = protocol.DEFAULT_MAX_MESSAGE
    max_in_flight: int = 2
    heartbeat_s: float = 5.0
    handshake_timeout_s: float = 5.0  # for the whole handshake, from accept to a complete HELLO
    max_handshakes: int = 256  # connections held before their HELLO; beyond, the oldest is closed
    max_hello: int = protocol.MAX_HELLO  # message cap until the handshake succeeds
    failed_handshake_delay_s: float = 0.25  # first failed HELLO of an address answered after this; doubles per failure
    failed_handshake_max_delay_s: float = 4.0
    # an edge sends something at least every heartbeat_s; silent for 3 of them (as the edge judges the recognizer:
    # edge/link_state.py), the desk is gone (cable pulled, Pi frozen): its session ends
    idle_timeout_s: float = 15.0
    index_poll_s: float = 2.0
    node: str = ""  # this node's name in a pool, told to edges in WELCOME (empty: one recognizer)
    station_fps: float = 15.0  # frames/s each station is planned for (recognizer.server.pacing)
    max_station_fps: float = 30.0  # the most any station is told it may send
    # the cores the fair share counts on (0: the CPUs this process may run on; a container's CPU quota is not seen)
    pacing_cores: float = 0.0
    follow_served: bool = True  # the share follows what the stations are served (False: the CPU model alone)

    def __post_init__(self) -> None:
        check_section(self, "server")  # port, max_stations, max_in_flight, station rates ...: their flags' bounds
        PacingParams(self.station_fps, self.max_station_fps)  # station_fps <= max_fps
        if self.pacing_cores < 0:
            raise ValueError(f"pacing_cores must be >= 0 (0: the CPUs this process may use), got {self.pacing_cores}")
        if self.max_message < 64 * 1024:
            raise ValueError("max_message must be at least 64 KiB")
        if self.idle_timeout_s <= self.heartbeat_s:
            raise ValueError("idle_timeout_s must be longer than heartbeat_s")
        if not 0 < self.handshake_timeout_s <= 60:
            raise ValueError(f"handshake_timeout_s must be in (0, 60] s, got {self.handshake_timeout_s}")
        if self.max_handshakes < 1:
            raise ValueError("max_handshakes must be at least 1")
        if not 256 <= self.max_hello <= 64 * 1024:
            raise ValueError(f"max_hello must be 256 bytes..64 KiB, got {self.max_hello}")
        if not 0 <= self.failed_handshake_delay_s <= self.failed_handshake_max_delay_s <= 60:
            raise ValueError("need 0 <= failed_handshake_delay_s <= failed_handshake_max_delay_s <= 60")


class StationObserver(Protocol):
    """Told about every admitted station (alerts): each call on that station's own thread, in order."""

    def on_frame(self, status: StationSnapshot, outcome: FrameOutcome, raw_jpeg: bytes) -> None:
        """A frame was processed (before its RESULT is sent)."""

    def on_camera(self, status: StationSnapshot) -> None:
        """The station's camera state changed (`status.camera`: ok | lost)."""

    def on_disconnect(self, status: StationSnapshot, reason: str) -> None:
        """The station's session ended; `reason`: station_disconnected, or recognizer_stopped."""


def check_hello(msg: Message, config: ServerConfig, peer: str, session: int = 0) -> StationSnapshot:
    """The station a HELLO names, or `HelloRefused` with the REFUSE code and reason. Pure: no I/O, no waiting."""
    if msg.kind != MessageKind.HELLO:
        raise HelloRefused(Refusal("expected_hello", f"the first message must be HELLO, got {msg.kind.name}"))
    version = msg.header.get("protocol")
    if type(version) is not int or version != protocol.PROTOCOL_VERSION:  # exact: not true, not 1.0
        raise HelloRefused(Refusal(
            "bad_version", f"this server speaks protocol {protocol.PROTOCOL_VERSION}, the client sent {version!r:.40}"))
    token = msg.header.get("token")
    if not isinstance(token, str) or not hmac.compare_digest(token.encode(), config.token.encode()):
        raise HelloRefused(Refusal("bad_token", "wrong or missing token"))
    try:
        station = validate_name(msg.header.get("station"), "station id")
    except InvalidName as exc:
        raise HelloRefused(Refusal("bad_station", str(exc))) from None
    try:
        login = validate_login(msg.header.get("login"))
    except InvalidName as exc:
        raise HelloRefused(Refusal("bad_login", str(exc))) from None
    annotate = msg.header.get("annotate", True)
    if type(annotate) is not bool:
        raise HelloRefused(Refusal("bad_hello", f"annotate must be true or false, the client sent {annotate!r:.40}"))
    return StationSnapshot(session, station, login, peer, time.time(), annotate=annotate)


class HelloRefused(Exception):
    """A HELLO that is not accepted; carries the refusal to send."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.reason)
        self.refusal = refusal


class StationConnection:
    """The socket and thread of one station: admission, WELCOME, then each message through its `StationSession`
    (recognizer.station.session) and each action it returns carried out. Talks to the server only through its public
    methods (register, unregister, admission_done, session_ended, frame_processed, camera_changed, enrol)."""

    def __init__(self, server: "RecognizerServer", sock: socket.socket, peer: str, decoder: protocol.Decoder,
                 hello: StationSnapshot, hello_message: Optional[Message] = None) -> None:
        self.server = server
        self._hello_message = hello_message  # until admitted: the HELLO whose credential the trust policy checks
        self.admission: Optional[Admission] = None  # once admitted: what the trust policy said (revocation checks)
        decoder.set_max_size(server.config.max_message)  # the handshake is over: frames may be big
        self.stream = MessageStream(sock, server.config.max_message, decoder)
        self.peer = peer
        self._hello = hello
        self.session: Optional[StationSession] = None  # once admitted
        self.hung_up = threading.Event()  # the edge hung up (HangupWatch): queued frames are dropped, not run
        self.thread = threading.Thread(target=self._run, name=f"station-{peer}", daemon=True)

    @property
    def status(self) -> StationSnapshot:
        """The station as its session last saw it (frozen; replaced after every message)."""
        return self.session.snapshot if self.session is not None else self._hello

    def close(self) -> None:
        self.stream.close()

    def _refuse(self, code: str, reason: str) -> None:
        self.server.refusal_log.warning("refused %s (station %s): %s", self.peer, self._hello.station, reason)
        try:
            self.stream.send(protocol.refuse(code, reason))
        except OSError:
            pass

    def _admit(self) -> bool:
        """The station's claim checked by the trust policy (may ask the dashboard: so here, on this station's own
        thread, not on the handshake gate's) and registered; REFUSE and False when it may not connect."""
        assert self._hello_message is not None
        try:
            admission = self.server.trust.admit(self._hello.station, self._hello_message.header, self.host)
        except TrustRefusal as exc:
            self._refuse(exc.code, exc.reason)
            return False
        finally:
            self._hello_message = None  # the credential is not kept
        self.admission = admission
        refusal = self.server.register(self, admission)
        if refusal is not None:
            self._refuse(*refusal)
            return False
        return True

    def _run(self) -> None:
        cfg = self.server.config
        station = self._hello.station
        limiter = self.server.log_limiter
        admitted = False
        try:
            self.stream.sock.settimeout(cfg.handshake_timeout_s)
            try:
                admitted = self._admit()
            finally:
                self.server.admission_done()
            if not admitted:
                return
            self.stream.sock.settimeout(cfg.idle_timeout_s)
            server_name = f"{SERVER_NAME} node={cfg.node}" if cfg.node else SERVER_NAME
            self.stream.send(protocol.welcome(server_name, cfg.max_in_flight, cfg.heartbeat_s, self.server.station_rate()))
            if self.server.alerts_state != "ok":
                self.stream.send(protocol.heartbeat(time.time(), alerts=self.server.alerts_state))
            log.info("station %s (login %s) connected from %s", station, who(self._hello.login), self.peer)
            self.session = StationSession(self._hello, self.server.new_pipeline(), limiter,
                                          rate=self.server.station_rate, alerts=lambda: self.server.alerts_state)
            keep_alive(self.stream.sock, cfg.heartbeat_s, cfg.idle_timeout_s)
            watch_key = self.server.hangups.watch(self.stream.sock, self._hang_up)
            try:
                self._serve(self.session)
            finally:
                self.server.hangups.forget(self.stream.sock, watch_key)
        except ProtocolError as exc:
            limiter.log(log, logging.WARNING, self.host, "closing %s (station %s): %s", self.peer, station, exc)
            self.send_error("protocol_error", str(exc))
        except socket.timeout:
            log.warning("closing %s: nothing received for %.0f s", self.peer, self.stream.sock.gettimeout() or 0)
        except OSError as exc:
            log.info("connection %s ended: %s", self.peer, exc)
        except Exception:  # a bug on one connection must not leave a thread traceback; logged with its trace
            if limiter.allow(f"internal {self.host}") is not None:
                log.exception("closing %s (station %s): internal error", self.peer, station)
            self.send_error("internal_error", "the server failed on this connection's input")
        finally:
            self.close()
            self.server.unregister(self)
            log.info("station %s disconnected", station)
            if admitted:
                self.server.session_ended(self.status)

    @property
    def host(self) -> str:
        return self.peer.rsplit(":", 1)[0]

    def send_error(self, code: str, reason: str) -> None:
        """ERROR `code` to the station, if it can still be sent."""
        try:
            self.stream.send(protocol.error(code, reason))
        except OSError:
            pass

    def _hang_up(self) -> None:
        """The edge hung up (HangupWatch's thread): the desk leaves the registry now, so the next status report says
        it is gone, although this thread may still be running a frame; it stops at its next message."""
        self.hung_up.set()
        self.server.unregister(self)

    def _serve(self, session: StationSession) -> None:
        frames = 0
        while True:
            msg = self.stream.recv()
            if msg is None:
                return
            if self.hung_up.is_set() or (self.server.hangups.enabled and peer_hung_up(self.stream.sock)):
                # frames sent before the edge went: nobody is left to answer them
                self._hang_up()
                log.info("station %s hung up; its queued messages are dropped", session.snapshot.station)
                return
            t0 = time.monotonic()
            self._carry_out(session, msg)
            if msg.kind == MessageKind.FRAME:  # the pacing hears how long it took and whether the next one waits
                frames += 1
                self.server.pacing.frame_served(self, time.monotonic() - t0, self.stream.waiting(), frames)

    def _carry_out(self, session: StationSession, msg: Message) -> None:
        """`msg` through the station's session, and each action it returns carried out."""
        for action in session.receive(msg):
            if isinstance(action, Send):
                self.stream.send(action.message)
            elif isinstance(action, FrameProcessed):
                self.server.frame_processed(action.snapshot, action.outcome, action.jpeg, action.cpu_s)
            elif isinstance(action, CameraChanged):
                self.server.camera_changed(action.snapshot)
            elif isinstance(action, Enrol):
                self.stream.send(self.server.enrol(session.snapshot.station, action.message))


class RecognizerServer:
    """Accepts stations on a TCP port and serves each in its own thread."""

    def __init__(
        self,
        config: ServerConfig,
        store: IndexStore,
        pipeline_factory: Callable[[], StationPipeline],
        enroller: Enroller,
        trust: Optional[Trust] = None,
    ) -> None:
        self.config = config
        self.trust = trust if trust is not None else Trust(TrustConfig(), None)  # default: grants needed, none checkable
        self.store = store
        self.new_pipeline = pipeline_factory
        self.enroller = enroller
        self.observers: list[StationObserver] = []
        self._stations: dict[str, StationConnection] = {}
        self._sessions: set[StationConnection] = set()
        self._session_ids = itertools.count(1)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._listener: Optional[socket.socket] = None
        self.gate: Optional[HandshakeGate] = None
        self._admitting = threading.BoundedSemaphore(max(1, config.max_stations))
        self.pacing = FairShare(PacingParams(config.station_fps, config.max_station_fps,
                                             control=ControlParams(enabled=config.follow_served,
                                                                   window=config.max_in_flight)),
                                cores=config.pacing_cores or None)
        self.log_limiter = LogLimiter()  # per peer address / station: a flood of bad input is not a flood of log
        # refused HELLOs (bad credential, station in use, ...): five lines a minute, then "... and 8,645 more"
        self.refusal_log = RateLimitedLog(log, "refused handshakes", per_window=5)
        self.alerts_state = "ok"  # what the alert outbox can do (shared.alerts.OUTBOX_STATES), told to the edges
        self.address: tuple[str, int] = (config.host, config.port)
        self._end_reason = ""  # set by drain(): why the sessions end (their incidents are closed with it)
        self.hangups = HangupWatch()  # edges that hang up while their thread is busy, noticed at once
        self.left_listeners: list[Callable[[], None]] = []  # told (no arguments) when a station leaves the registry

    # -- registry --
    def admit(self, sock: socket.socket, peer: str, decoder: protocol.Decoder, hello: Message) -> Optional[Refusal]:
        """Called by the gate with a complete first message: start the station's thread, or say why not.

        Only the pure checks run here (the gate thread must never wait); the station's credential is checked by
        the trust policy, and the station registered, on its own thread before WELCOME. At most `max_stations`
        stations are being admitted at once, so a flood of valid-looking HELLOs cannot make threads without bound.
        """
        try:
            status = check_hello(hello, self.config, peer, next(self._session_ids))
        except HelloRefused as exc:
            return exc.refusal
        if not self._admitting.acquire(blocking=False):
            return Refusal("busy", "too many stations are being admitted at once; retry", penalise=False)
        conn = StationConnection(self, sock, peer, decoder, status, hello)
        with self._lock:
            self._sessions = {s for s in self._sessions if s.thread.is_alive()} | {conn}
        conn.thread.start()
        return None

    # -- what a station's connection asks of the server (its thread) --
    def admission_done(self) -> None:
        """The connection's admission is decided (admitted or refused): another may be admitted."""
        self._admitting.release()

    def register(self, conn: StationConnection, admission: Admission) -> Optional[tuple[str, str]]:
        """Register a station the trust policy admitted; (code, reason) to refuse it with instead."""
        station = conn.status.station
        with self._lock:
            old = self._stations.get(station)
            if old is None and len(self._stations) >= self.config.max_stations:
                return "server_full", f"the server already serves {self.config.max_stations} stations"
            cap = self.config.max_stations_per_address
            if old is None and not admission.verified and cap and sum(
                    1 for c in self._stations.values() if c.host == conn.host) >= cap:
                return "address_full", f"{conn.host} already holds {cap} stations without their own credential"
            if old is not None:
                silent_s = time.time() - (old.status.last_seen or old.status.connected_at)
                old_home = old.admission is None or old.admission.home or old.admission.verified
                if not self.trust.may_take_over(admission, silent_s, old_home):
                    log.warning("station %s claimed again from %s while connected from %s; refused (no credential)",
                                station, conn.peer, old.peer)
                    return "station_in_use", (f"station {station!r} is connected from elsewhere; only its own "
                                              "credential may replace that connection")
            self._stations[station] = conn
        if old is not None:
            log.warning("station %s reconnected from %s; closing its old connection %s", station, conn.peer, old.peer)
            old.close()
        return None

    def unregister(self, conn: StationConnection) -> None:
        """`conn` leaves the registry (from its own thread, or the hang-up watch's); the left_listeners hear it."""
        with self._lock:
            if self._stations.get(conn.status.station) is not conn:
                return
            del self._stations[conn.status.station]
        for listener in self.left_listeners:
            try:
                listener()
            except Exception:  # a listener (the status reporter's poke) failing must not keep the desk registered
                log.exception("station-left listener failed")

    def frame_processed(self, status: StationSnapshot, outcome: FrameOutcome, raw_jpeg: bytes, cpu_s: float) -> None:
        """A frame took `cpu_s` of its thread's CPU (pacing); tell the observers (alerts), before its RESULT is sent."""
        self.pacing.frame_cost(cpu_s)
        for observer in self.observers:
            try:
                observer.on_frame(status, outcome, raw_jpeg)
            except Exception:  # an observer (alerts) failing must not drop frames; logged with trace
                log.exception("frame observer failed for station %s", status.station)

    def camera_changed(self, status: StationSnapshot) -> None:
        """Tell the observers a station's camera went lost or came back."""
        for observer in self.observers:
            try:
                observer.on_camera(status)
            except Exception:  # an observer (alerts) failing must not drop the station; logged with trace
                log.exception("camera observer failed for station %s", status.station)

    def session_ended(self, status: StationSnapshot) -> None:
        """Tell the observers a station's session ended (on its thread, after its last frame)."""
        reason = self._end_reason or ("recognizer_stopped" if self._stop.is_set() else "station_disconnected")
        for observer in self.observers:
            try:
                observer.on_disconnect(status, reason)
            except Exception:  # one observer failing must not keep the others from hearing it; logged with trace
                log.exception("disconnect observer failed for station %s", status.station)

    def station_rate(self) -> float:
        """Frames/s each connected station is told it may send: its fair share of this machine (pacing.py)."""
        with self._lock:
            n = len(self._stations)
        return self.pacing.rate(n)

    def live_credentials(self) -> list[tuple[str, str]]:
        """(station, credential digest) of every connected station admitted on its own credential."""
        with self._lock:
            return [(st, c.admission.credential) for st, c in self._stations.items()
                    if c.admission is not None and c.admission.credential]

    def disconnect_station(self, station_id: str, code: str, reason: str, credential: str = "") -> bool:
        """Close the connection of `station_id` (only if admitted on `credential`, when given) with ERROR code/reason."""
        with self._lock:
            conn = self._stations.get(station_id)
        if conn is None or (credential and (conn.admission is None or conn.admission.credential != credential)):
            return False
        log.warning("station %s (%s): disconnected, %s", station_id, conn.peer, reason)
        conn.send_error(code, reason)
        conn.close()
        return True

    def report_status(self, alerts: str) -> None:
        """The alert outbox's state changed: remember it for heartbeats, and tell every connected edge now."""
        self.alerts_state = alerts
        with self._lock:
            sessions = list(self._stations.values())
        for session in sessions:
            try:
                session.stream.send(protocol.heartbeat(time.time(), alerts=alerts))
            except OSError:
                pass  # that station's own thread notices the broken connection

    def enrol(self, station: str, msg: Message) -> Message:
        """An ENROL from `station`, enrolled only with the right the trust policy gives (an admin's grant; `by` comes
        from that right); the ENROL_RESULT to send back."""
        request_id = msg.get("request_id", str)
        try:
            right = self.trust.authorize_enrol(station, msg.header.get("name"), msg.header)
        except TrustRefusal as exc:
            log.warning("station %s: enrolment of %s refused: %s", station, who(msg.header.get("name")), exc.reason)
            return protocol.enrol_result(request_id, False, exc.reason, code=exc.code)
        confirm = msg.header.get("confirm_lookalike")
        outcome = self.enroller.enrol(msg.header.get("name"), msg.payload, by=f"{station}/{right.by}",
                                      provenance=Provenance(by=right.by, station=station, grant_id=right.grant_id),
                                      confirm_lookalike=confirm if isinstance(confirm, str) else "")
        self.trust.enrol_done(right, outcome.ok, outcome.reason)  # the audit keeps a confirmed lookalike too
        alike = outcome.lookalike
        return protocol.enrol_result(
            request_id, outcome.ok, outcome.reason, outcome.name, outcome.count, code=outcome.code,
            box=outcome.box, crop=outcome.crop,
            lookalike=None if alike is None else {"name": alike.name, "distance": round(alike.distance, 3)})

    def stations(self) -> list[StationSnapshot]:
        """Every registered station as its session last saw it."""
        with self._lock:
            return [s.status for s in self._stations.values()]

    # -- lifecycle --
    def start(self) -> tuple[str, int]:
        """Bind and start accepting in the background; returns the bound (host, port)."""
        cfg = self.config
        listener = socket.create_server((cfg.host, cfg.port), reuse_port=False, backlog=512)
        self._listener = listener
        self.address = listener.getsockname()[:2]
        self.gate = HandshakeGate(
            listener, self.admit, handshake_timeout_s=cfg.handshake_timeout_s, max_pending=cfg.max_handshakes,
            max_hello=cfg.max_hello, log_limiter=self.log_limiter,
            failure_delay=FailureDelay(cfg.failed_handshake_delay_s, cfg.failed_handshake_max_delay_s),
        )
        self.gate.start()
        self.hangups.start()
        t = threading.Thread(target=self._index_loop, name="index-watch", daemon=True)
        t.start()
        self._threads.append(t)
        log.info("recognizer listening on %s:%d", *self.address)
        return self.address

    def _index_loop(self) -> None:
        while not self._stop.wait(self.config.index_poll_s):
            self.store.reload_if_changed()

    def drain(self, reason: str, timeout_s: float) -> int:
        """Stop accepting (the port closes, so a balancer sends new stations elsewhere) and tell every station to
        move: ERROR `draining`, then close; the edge reconnects at once, through the balancer. Their incidents
        close with `closed_by: station_moved`. Returns how many sessions had not ended within `timeout_s`."""
        self._end_reason = "station_moved"
        if self.gate is not None:
            self.gate.stop()
        if self._listener is not None:
            self._listener.close()
        with self._lock:
            sessions = [s for s in self._sessions if s.thread.is_alive()]
        log.info("draining: telling %d station(s) to move (%s)", len(sessions), reason)
        for s in sessions:
            s.send_error("draining", f"this recognizer node is stopping ({reason}); reconnect to be served by another")
            s.close()
        deadline = time.monotonic() + timeout_s
        for s in sessions:
            s.thread.join(timeout=max(0.0, deadline - time.monotonic()))
        return sum(1 for s in sessions if s.thread.is_alive())

    def stop(self) -> None:
        """Stop accepting, close every station and join the threads."""
        self._stop.set()
        if self.gate is not None:
            self.gate.stop()
        if self._listener is not None:
            self._listener.close()
        with self._lock:
            sessions = list(self._sessions)
        for s in sessions:
            s.close()
        for s in sessions:
            s.thread.join(timeout=5)
        for t in self._threads:
            t.join(timeout=5)
        self.hangups.stop()
        log.info("recognizer stopped")

    def wait(self) -> None:
        self._stop.wait()
