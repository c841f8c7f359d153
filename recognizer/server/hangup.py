"""Stations whose edge hung up, noticed at once, while their own thread is busy with a frame or has frames queued.

A station's thread reads a message, runs the frame (a second or more on a loaded machine), sends the RESULT, reads
the next. An edge that is killed or unplugged mid-frame leaves its last frames in the socket (or the decoder), so
that thread learnt it only when a later send failed: 6-11 s late with 10 desks on two cores, and the desk was
reported "in session" all that time (the dashboard's `station_offline` counts from the last such report).

`HangupWatch` is one thread over an epoll set of the stations' sockets asking only for EPOLLRDHUP / EPOLLHUP /
EPOLLERR: the peer's FIN (a close, or the kernel closing a killed process's socket), an RST, or an error (a send
that timed out under TCP_USER_TIMEOUT after the cable was pulled). Frames arriving wake nobody. On a hang-up it
calls the station's callback once (the connection unregisters the desk and drops its queued frames). dlib holds
the GIL while it detects, so the callback runs at the frame's next step in Python (a fraction of a frame, ~0.2 s
at 1080p here), not in the middle of a detection.

Linux only (epoll, EPOLLRDHUP); elsewhere `available` is False and stations are noticed at their next read or send.
An edge never half-closes (it shuts both ways: shared/stream.py), so a FIN means the desk is gone.
"""
from __future__ import annotations

import logging
import select
import socket
import threading
from typing import Callable

log = logging.getLogger(__name__)

_EVENTS = getattr(select, "EPOLLRDHUP", 0) | getattr(select, "EPOLLHUP", 0) | getattr(select, "EPOLLERR", 0)


def keep_alive(sock: socket.socket, idle_s: float, user_timeout_s: float) -> None:
    """TCP keepalive after `idle_s` of silence (3 probes `idle_s`/2 apart) and unacknowledged data given up after
    `user_timeout_s`: a desk whose cable was pulled errors its socket (seen by `HangupWatch`) instead of the
    kernel retrying for ~15 minutes. Options this system lacks are skipped."""
    options = [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)]
    for name, value in (("TCP_KEEPIDLE", max(1, int(idle_s))), ("TCP_KEEPINTVL", max(1, int(idle_s / 2))),
                        ("TCP_KEEPCNT", 3), ("TCP_USER_TIMEOUT", max(1000, int(user_timeout_s * 1000)))):
        if hasattr(socket, name):
            options.append((socket.IPPROTO_TCP, getattr(socket, name), value))
    for level, option, value in options:
        try:
            sock.setsockopt(level, option, value)
        except OSError:
            pass


def peer_hung_up(sock: socket.socket) -> bool:
    """True when the peer of `sock` has closed or reset (FIN/RST received), even with its bytes still unread: asked
    by a station's thread before each message (no GIL hand-over to wait for, unlike the watch's callback)."""
    if not HangupWatch.available or sock.fileno() < 0:
        return False
    poller = select.poll()
    poller.register(sock, select.POLLRDHUP)
    return any(mask & (select.POLLRDHUP | select.POLLHUP | select.POLLERR) for _fd, mask in poller.poll(0))


class HangupWatch:
    """One thread telling each watched socket's callback, once, that its peer hung up. Thread-safe."""

    available = hasattr(select, "epoll") and hasattr(select, "EPOLLRDHUP")

    def __init__(self, poll_s: float = 0.5, enabled: bool = True) -> None:
        """`enabled` False: watch nothing (stations noticed at their next read or send; a test's comparison)."""
        self._poll_s = poll_s
        self._lock = threading.Lock()
        self._watched: dict[int, tuple[socket.socket, Callable[[], None]]] = {}
        self.enabled = self.available and enabled
        self._epoll = select.epoll() if self.enabled else None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hangup-watch", daemon=True)

    def start(self) -> None:
        if self._epoll is not None:
            self._thread.start()

    def watch(self, sock: socket.socket, on_hangup: Callable[[], None]) -> int:
        """Call `on_hangup` (on the watch's thread) once the peer of `sock` hangs up; returns the key for `forget`."""
        fd = sock.fileno()
        if self._epoll is None or fd < 0:
            return -1
        with self._lock:
            self._watched[fd] = (sock, on_hangup)
            try:
                self._epoll.register(fd, _EVENTS | select.EPOLLONESHOT)
            except FileExistsError:  # a closed socket's number, reused before its forget()
                self._epoll.modify(fd, _EVENTS | select.EPOLLONESHOT)
        return fd

    def forget(self, sock: socket.socket, key: int) -> None:
        """Stop watching `sock` (call before closing it; `key` from `watch`). Safe if its number was reused."""
        if self._epoll is None or key < 0:
            return
        with self._lock:
            entry = self._watched.get(key)
            if entry is None or entry[0] is not sock:
                return
            del self._watched[key]
            try:
                self._epoll.unregister(key)
            except (OSError, ValueError):  # already closed: the kernel dropped it from the set
                pass

    def _run(self) -> None:
        assert self._epoll is not None
        while not self._stop.is_set():
            try:
                events = self._epoll.poll(self._poll_s)
            except InterruptedError:
                continue
            except (OSError, ValueError):  # closed by stop()
                return
            for fd, _mask in events:
                with self._lock:
                    entry = self._watched.pop(fd, None)
                if entry is None:
                    continue
                try:
                    entry[1]()
                except Exception:  # one station's callback failing must not stop the watch; logged with trace
                    log.exception("hang-up callback failed")

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2 * self._poll_s + 1)
        if self._epoll is not None:
            self._epoll.close()
