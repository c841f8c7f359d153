"""The recognizer's front door: accepts connections and reads their HELLO on one thread, with a selector.

A peer that has not completed the handshake gets no thread of its own, at most `max_hello` bytes of buffer,
and `handshake_timeout_s` for the *whole* handshake (not per read). At most `max_pending` such peers are
held; a new connection beyond that closes the oldest pending one, so a flood of slow or silent connections
(slowloris) cannot lock a real station out: a real edge sends its HELLO within milliseconds of connecting.
A handshake that fails (wrong token, bad station id, …) is answered only after a delay that grows with that
peer address's recent failures, without holding up anyone else. Only a station that passed the handshake
gets a thread (see `RecognizerServer.admit`).
"""
from __future__ import annotations

import errno
import heapq
import itertools
import logging
import selectors
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from shared import protocol
from shared.protocol import Message, MessageKind, ProtocolError

log = logging.getLogger(__name__)

_RECV_CHUNK = 4096
_DRAIN_LIMIT = 256 * 1024  # bytes read and dropped before closing, so the reply is not lost to a TCP reset


@dataclass(frozen=True)
class Refusal:
    """Why a HELLO was not accepted: sent as REFUSE (or ERROR) and then the connection closes."""

    code: str
    reason: str
    penalise: bool = True  # the peer's fault (counts towards its failure delay); False for e.g. server_full
    kind: MessageKind = MessageKind.REFUSE


# admit(sock, peer, decoder, hello) -> None when the station was taken over by a session thread
Admit = Callable[[socket.socket, str, protocol.Decoder, Message], Optional[Refusal]]


class LogLimiter:
    """At most `burst` log lines per key (a peer address, a station) per `period_s`; counts what it drops."""

    def __init__(self, burst: int = 5, period_s: float = 10.0, max_keys: int = 4096) -> None:
        self.burst, self.period_s, self.max_keys = burst, period_s, max_keys
        self._seen: dict[str, list] = {}  # key -> [window start, lines in window, suppressed]
        self._lock = threading.Lock()

    def allow(self, key: str, now: Optional[float] = None) -> Optional[int]:
        """None: drop this line. Else the number of lines dropped for this key since the last one let through."""
        now = time.monotonic() if now is None else now
        with self._lock:
            entry = self._seen.get(key)
            if entry is None or now - entry[0] >= self.period_s:
                suppressed = entry[2] if entry is not None else 0
                self._seen.pop(key, None)
                if len(self._seen) >= self.max_keys:
                    del self._seen[next(iter(self._seen))]
                self._seen[key] = [now, 1, 0]
                return suppressed
            if entry[1] < self.burst:
                entry[1] += 1
                suppressed, entry[2] = entry[2], 0
                return suppressed
            entry[2] += 1
            return None

    def log(self, logger: logging.Logger, level: int, key: str, msg: str, *args: object) -> None:
        """Log `msg % args` unless `key` is over its budget; notes how many lines were dropped before it."""
        suppressed = self.allow(key)
        if suppressed is None:
            return
        if suppressed:
            msg += " (%d similar lines from %s suppressed)"
            args = (*args, suppressed, key)
        logger.log(level, msg, *args)


class FailureDelay:
    """Delay before answering a failed handshake: `base_s` doubled per recent failure of that address, ≤ `max_s`.

    Failures older than `window_s` are forgotten; at most `max_peers` addresses are remembered (oldest dropped).
    """

    def __init__(self, base_s: float = 0.25, max_s: float = 4.0, window_s: float = 60.0, max_peers: int = 4096) -> None:
        self.base_s, self.max_s, self.window_s, self.max_peers = base_s, max_s, window_s, max_peers
        self._failures: dict[str, tuple[int, float]] = {}  # host -> (recent failures, time of the last)

    def failed(self, host: str, now: float) -> float:
        """Record a failure of `host` at `now`; return the delay its reply should wait."""
        count, last = self._failures.pop(host, (0, now))
        count = 1 if now - last > self.window_s else count + 1
        if len(self._failures) >= self.max_peers:
            del self._failures[next(iter(self._failures))]
        self._failures[host] = (count, now)
        if self.base_s <= 0:
            return 0.0
        return min(self.max_s, self.base_s * 2 ** min(count - 1, 20))


@dataclass(eq=False)
class _Pending:
    sock: socket.socket
    peer: str
    host: str
    deadline: float
    decoder: protocol.Decoder
    head: bytes = b""  # the first 5 bytes, to refuse a non-HELLO before its length is even checked
    reply: Optional[bytes] = None  # a refusal waiting for its delay to pass
    reply_at: float = 0.0
    closed: bool = False
    order: int = field(default=0)
    round: int = 0  # the select round it was accepted in


class HandshakeGate:
    """Accept loop plus handshakes of every not-yet-admitted connection, on one thread."""

    def __init__(
        self,
        listener: socket.socket,
        admit: Admit,
        *,
        handshake_timeout_s: float,
        max_pending: int,
        max_hello: int,
        failure_delay: FailureDelay,
        log_limiter: LogLimiter,
    ) -> None:
        self.listener = listener
        self.admit = admit
        self.handshake_timeout_s = handshake_timeout_s
        self.max_pending = max_pending
        self.max_hello = max_hello
        self.failure_delay = failure_delay
        self.limiter = log_limiter
        self._selector = selectors.DefaultSelector()
        self._pending: dict[socket.socket, _Pending] = {}  # insertion order = age; the oldest is evicted first
        self._timers: list[tuple[float, int, _Pending]] = []  # (when, tiebreak, conn): deadlines and delayed replies
        self._counter = itertools.count()
        self._stop = threading.Event()
        self._accept_paused_until = 0.0
        self._round = 0
        self.evicted = 0  # pending connections closed to make room (for tests and the bench)
        self.thread = threading.Thread(target=self._run, name="handshake-gate", daemon=True)

    @property
    def pending(self) -> int:
        return len(self._pending)

    def start(self) -> None:
        self.listener.setblocking(False)
        self._selector.register(self.listener, selectors.EVENT_READ, None)
        self.thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(timeout=5)

    # -- loop --
    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                timeout = 0.5
                if self._timers:
                    timeout = min(timeout, max(0.0, self._timers[0][0] - now))
                if now < self._accept_paused_until:
                    timeout = min(timeout, self._accept_paused_until - now)
                self._round += 1
                # reads first, accepts last: every accepted connection gets one round to be read before it
                # can be evicted, so a real station's HELLO (sent right after connecting) is never lost to a flood
                events = sorted(self._selector.select(timeout), key=lambda e: e[0].data is None)
                for key, _ in events:
                    try:
                        if key.data is None:
                            self._accept()
                        else:
                            self._read(key.data)
                    except Exception:  # a bug must not stop the front door; logged with its trace
                        log.exception("handshake gate: internal error")
                        if key.data is not None:
                            self._close(key.data)
                self._fire_timers(time.monotonic())
                if self._accept_paused_until and time.monotonic() >= self._accept_paused_until:
                    self._accept_paused_until = 0.0
                    self._selector.register(self.listener, selectors.EVENT_READ, None)
        finally:
            for conn in list(self._pending.values()):
                self._close(conn)
            self._selector.close()

    def _accept(self) -> None:
        for _ in range(64):  # a burst at a time, then serve reads and timers again
            try:
                sock, addr = self.listener.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self.limiter.log(log, logging.WARNING, "accept", "cannot accept: %s; pausing accepts for 0.1 s", exc)
                    if self._pending:
                        self._evict_oldest()
                    self._selector.unregister(self.listener)
                    self._accept_paused_until = time.monotonic() + 0.1
                    return
                self.limiter.log(log, logging.WARNING, "accept", "accept failed: %s", exc)
                return
            if len(self._pending) >= self.max_pending:
                if next(iter(self._pending.values())).round == self._round:
                    # all of them were accepted this round and not read yet: this one waits for the next round
                    self._reply_and_close_raw(sock, protocol.encode(
                        protocol.refuse("busy", "too many connections are handshaking; retry")))
                    return
                self._evict_oldest()
            sock.setblocking(False)
            now = time.monotonic()
            conn = _Pending(sock, f"{addr[0]}:{addr[1]}", str(addr[0]), now + self.handshake_timeout_s,
                            protocol.Decoder(self.max_hello), order=next(self._counter), round=self._round)
            self._pending[sock] = conn
            self._selector.register(sock, selectors.EVENT_READ, conn)
            heapq.heappush(self._timers, (conn.deadline, conn.order, conn))

    def _evict_oldest(self) -> None:
        conn = next(iter(self._pending.values()))
        self.evicted += 1
        self.limiter.log(log, logging.WARNING, "evict", "%d connections waiting for their handshake; closing the oldest "
                         "(%s)", len(self._pending), conn.peer)
        self._reply_and_close(conn, protocol.encode(protocol.refuse("busy", "too many connections are handshaking; retry")))

    def _read(self, conn: _Pending) -> None:
        try:
            data = conn.sock.recv(_RECV_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            log.debug("%s: %s before the handshake", conn.peer, exc)
            self._close(conn)
            return
        if not data:
            self.limiter.log(log, logging.INFO, conn.host, "%s closed before the handshake", conn.peer)
            self._close(conn)
            return
        if len(conn.head) < 5:
            conn.head += data[: 5 - len(conn.head)]
            if len(conn.head) == 5 and conn.head[4] != MessageKind.HELLO:
                try:
                    name = MessageKind(conn.head[4]).name
                except ValueError:
                    name = f"0x{conn.head[4]:02x}"
                self._refuse(conn, Refusal("expected_hello", f"the first message must be HELLO, got {name}"))
                return
        try:
            conn.decoder.feed(data)
            hello = conn.decoder.next_message()
        except ProtocolError as exc:
            self._refuse(conn, Refusal("protocol_error", str(exc), kind=MessageKind.ERROR))
            return
        if hello is None:
            return
        # the connection leaves the gate: a session thread takes it over, or it is refused
        self._selector.unregister(conn.sock)
        del self._pending[conn.sock]
        conn.sock.setblocking(True)
        refusal = self.admit(conn.sock, conn.peer, conn.decoder, hello)
        if refusal is None:
            conn.closed = True  # no longer ours (its timer entry is skipped)
            return
        conn.sock.setblocking(False)
        self._pending[conn.sock] = conn
        self._refuse(conn, refusal, registered=False)

    def _refuse(self, conn: _Pending, refusal: Refusal, registered: bool = True) -> None:
        """Answer with the refusal, after this peer's failure delay when it is the peer's fault."""
        self.limiter.log(log, logging.WARNING, conn.host, "refused %s: %s", conn.peer, refusal.reason)
        reply = protocol.encode(Message(refusal.kind, {"code": refusal.code, "reason": refusal.reason}))
        delay = self.failure_delay.failed(conn.host, time.monotonic()) if refusal.penalise else 0.0
        if delay <= 0:
            self._reply_and_close(conn, reply)
            return
        if registered:
            self._selector.unregister(conn.sock)  # its further bytes are not read
        conn.reply, conn.reply_at = reply, time.monotonic() + delay
        heapq.heappush(self._timers, (conn.reply_at, conn.order, conn))

    def _fire_timers(self, now: float) -> None:
        if len(self._timers) > 4 * len(self._pending) + 256:  # entries of closed connections: drop them
            self._timers = [t for t in self._timers if not t[2].closed]
            heapq.heapify(self._timers)
        while self._timers and self._timers[0][0] <= now:
            _, _, conn = heapq.heappop(self._timers)
            if conn.closed:
                continue
            if conn.reply is not None:
                if now >= conn.reply_at:
                    self._reply_and_close(conn, conn.reply)
            elif now >= conn.deadline:
                self._refuse(conn, Refusal("handshake_timeout", f"no complete HELLO within "
                                           f"{self.handshake_timeout_s:g} s", penalise=False))

    def _reply_and_close(self, conn: _Pending, reply: bytes) -> None:
        sock = conn.sock
        self._close(conn, close_socket=False)  # out of the selector while its fd is still valid
        self._reply_and_close_raw(sock, reply)

    @staticmethod
    def _reply_and_close_raw(sock: socket.socket, reply: bytes) -> None:
        try:
            sock.setblocking(False)
            sock.send(reply)  # small: it fits the socket buffer, else it is dropped
            sock.shutdown(socket.SHUT_WR)
            drained = 0
            while drained < _DRAIN_LIMIT and (chunk := sock.recv(65536)):
                drained += len(chunk)
        except OSError:
            pass
        sock.close()

    def _close(self, conn: _Pending, close_socket: bool = True) -> None:
        if conn.closed:
            return
        conn.closed = True
        if self._pending.get(conn.sock) is conn:
            del self._pending[conn.sock]
        try:
            self._selector.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        if close_socket:
            conn.sock.close()
