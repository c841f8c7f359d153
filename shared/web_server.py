"""The HTTP server of the dashboard and of the edge page: waitress, with bounded threads, deadlines and a graceful stop.

Why waitress (and not Werkzeug's development server, gunicorn or cheroot): it reads every request, headers
and body, in one asynchronous loop and hands a worker thread only a *complete* request, so a client that
connects and says nothing, or trickles its headers a byte at a time, costs a socket and a few KB, never a
thread; its worker pool is fixed (`threads`); it is pure Python (installs on a Raspberry Pi without a
compiler) and runs a streaming WSGI response (the edge's MJPEG feed, the dashboard's event stream) in a
worker with flow control (a slow reader makes its writer wait, `outbuf_high_watermark`). gunicorn's thread
workers read headers in the worker thread and are meant to sit behind a proxy; cheroot does the same.

What is added here over plain waitress:
- a request deadline (`request_timeout_s`): a request whose headers and body have not all arrived that long
  after its first byte is dropped, so a slow trickle cannot hold a connection forever (waitress alone only
  closes connections *silent* for `idle_timeout_s`);
- a full house makes room: at `connection_limit` open connections the ones silent the longest are closed,
  so new visitors are still served while memory stays bounded (waitress alone would stop accepting);
- `poll()` instead of `select()` (no 1,024-descriptor ceiling) and the soft descriptor limit raised to fit;
- `stop()` that stops accepting, lets requests in service finish for `stop_grace_s`, then closes the rest.
"""
from __future__ import annotations

import json
import logging
import resource
import threading
import time
from dataclasses import dataclass
from typing import Callable, Optional

from waitress import wasyncore
from waitress.channel import HTTPChannel
from waitress.server import TcpWSGIServer

log = logging.getLogger(__name__)

MiB = 1024 * 1024
_LOOP_TIMEOUT_S = 0.5  # the loop wakes at least this often (to notice `stop` and run the deadlines)


@dataclass(frozen=True)
class WebServerSettings:
    """How one HTTP server is bounded. Times in seconds."""

    host: str = "127.0.0.1"
    port: int = 0
    threads: int = 8  # requests served at once (a stream holds one for its life)
    connection_limit: int = 2000  # open connections at most; beyond, the longest silent ones are closed
    idle_timeout_s: float = 30.0  # a connection silent this long (kept alive, or never sent anything) is closed
    request_timeout_s: float = 20.0  # a request's headers and body must all arrive within this of its first byte
    max_body_bytes: int = 5 * MiB  # a larger body is answered 413 by the server itself
    max_header_bytes: int = 64 * 1024
    outbuf_high_watermark: int = 4 * MiB  # a response's unsent bytes at most before its writer waits
    stop_grace_s: float = 5.0  # on stop, requests in service get this long to finish
    name: str = "web"  # for the log and the thread names

    def __post_init__(self) -> None:
        if not 1 <= self.threads <= 256:
            raise ValueError(f"threads {self.threads} must be 1..256")
        if not 16 <= self.connection_limit <= 100_000:
            raise ValueError(f"connection_limit {self.connection_limit} must be 16..100000")
        if not 0.5 <= self.idle_timeout_s <= 3600 or not 0.5 <= self.request_timeout_s <= 3600:
            raise ValueError("idle_timeout_s and request_timeout_s must be 0.5..3600 seconds")
        if not 0 <= self.stop_grace_s <= 300:
            raise ValueError("stop_grace_s must be 0..300 seconds")


class _Channel(HTTPChannel):
    """waitress's connection, which also remembers when the request it is receiving began."""

    receiving_since: Optional[float] = None  # monotonic time of the first byte of a request not yet complete

    def received(self, data: bytes) -> bool:
        if self.request is None and self.receiving_since is None and data:
            self.receiving_since = time.monotonic()
        result = super().received(data)
        if self.request is None:  # complete (handed to a worker) or nothing pending
            self.receiving_since = None
        return result


class _Server(TcpWSGIServer):
    """waitress's TCP server with the request deadline and room-making added (see the module's doc)."""

    channel_class = _Channel
    request_timeout_s = 20.0
    label = "web"
    _evicting: frozenset = frozenset()
    _last_full_log = 0.0

    def maintenance(self, now: float) -> None:
        super().maintenance(now)  # closes connections silent for channel_timeout
        cutoff = time.monotonic() - self.request_timeout_s
        late = [ch for ch in list(self.active_channels.values())
                if not ch.requests and ch.receiving_since is not None and ch.receiving_since < cutoff]
        for ch in late:
            ch.will_close = True
        if late:
            log.info("%s: dropped %d connection(s) whose request did not arrive within %.0f s",
                     self.label, len(late), self.request_timeout_s)

    def readable(self) -> bool:
        if self.accepting and len(self._map) >= self.adj.connection_limit:
            self._make_room()
        return super().readable()

    def _make_room(self) -> None:
        """Close the connections silent the longest (none being served), so new ones can come in."""
        if any(fd in self._map for fd in self._evicting):
            return  # the last ones are still closing
        idle = sorted((ch for ch in list(self.active_channels.values()) if not ch.requests and not ch.will_close),
                      key=lambda ch: ch.last_activity)
        victims = idle[:max(1, self.adj.connection_limit // 32)]
        for ch in victims:
            ch.will_close = True
        self._evicting = frozenset(ch._fileno for ch in victims)
        now = time.monotonic()
        if victims and now - self._last_full_log > 60:
            self._last_full_log = now
            log.warning("%s: %d connections open (the limit): closing the %d silent the longest to make room",
                        self.label, len(self._map), len(victims))


class WebServer:
    """One WSGI app served by waitress on `settings.host:port`. Binds at once (an OSError if the port is taken).

    `serve_forever()` runs the loop in the calling thread until `stop()`; `start()` runs it in a thread.
    `on_stop` callbacks run first when stopping (end live streams there, so their workers finish).
    """

    def __init__(self, app: Callable, settings: WebServerSettings, on_stop: Optional[Callable[[], None]] = None) -> None:
        self.settings = settings
        self._on_stop = on_stop
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._started = False
        raise_fd_limit(settings.connection_limit + 256)
        self._map: dict = {}
        self._server = self._build(app, settings)

    def _build(self, app: Callable, settings: WebServerSettings) -> _Server:
        from waitress.adjustments import Adjustments
        from waitress.task import ThreadedTaskDispatcher

        adj = Adjustments(
            host=settings.host, port=settings.port, threads=settings.threads,
            connection_limit=settings.connection_limit, channel_timeout=settings.idle_timeout_s,
            cleanup_interval=max(0.2, min(settings.idle_timeout_s, settings.request_timeout_s) / 4),
            max_request_body_size=settings.max_body_bytes, max_request_header_size=settings.max_header_bytes,
            outbuf_high_watermark=settings.outbuf_high_watermark, asyncore_use_poll=True,
            asyncore_loop_timeout=_LOOP_TIMEOUT_S, ident="", clear_untrusted_proxy_headers=True,
        )
        dispatcher = ThreadedTaskDispatcher()
        dispatcher.set_thread_count(settings.threads)
        try:
            server = _Server(app, map=self._map, dispatcher=dispatcher, adj=adj, sockinfo=adj.listen[0])
        except BaseException:
            dispatcher.shutdown(timeout=1)
            raise
        server.request_timeout_s = settings.request_timeout_s
        server.label = settings.name
        return server

    @property
    def port(self) -> int:
        return int(self._server.effective_port)

    @property
    def host(self) -> str:
        return str(self._server.effective_host)

    @property
    def open_connections(self) -> int:
        return len(self._server.active_channels)

    def serve_forever(self) -> None:
        """Serve until `stop()`; then stop accepting, let requests in service finish (up to the grace), close."""
        log.info("%s: serving on http://%s:%d/ (%d threads, at most %d connections, idle %.0f s, request %.0f s)",
                 self.settings.name, self.host, self.port, self.settings.threads, self.settings.connection_limit,
                 self.settings.idle_timeout_s, self.settings.request_timeout_s)
        self._started = True
        try:
            while not self._stopping.is_set():
                wasyncore.loop(timeout=_LOOP_TIMEOUT_S, map=self._map, use_poll=True, count=1)
            self._drain()
        finally:
            self._stopped.set()

    def start(self) -> "WebServer":
        """Run `serve_forever` in a daemon thread."""
        self._thread = threading.Thread(target=self.serve_forever, name=f"{self.settings.name}-server", daemon=True)
        self._thread.start()
        return self

    def stop(self, wait: bool = True) -> None:
        """Ask the loop to stop (safe from a signal handler with wait=False); with `wait`, return once it has."""
        if not self._stopping.is_set():
            self._stopping.set()
            if self._on_stop is not None:
                try:
                    self._on_stop()
                except Exception:  # noqa: BLE001 - stopping goes on whatever a callback does
                    log.exception("%s: on_stop failed", self.settings.name)
            try:
                self._server.pull_trigger()  # wake the loop now
            except OSError:
                pass
        if not wait:
            return
        if not self._started:  # never served: close the listening socket and the threads here
            if not self._stopped.is_set():
                self._drain()
                self._stopped.set()
            return
        if self._thread is not threading.current_thread():
            self._stopped.wait(self.settings.stop_grace_s + 10)

    def _drain(self) -> None:
        server = self._server
        server.accepting = False
        try:
            server.del_channel()
            server.socket.close()  # no new connections from here on
        except OSError:
            pass
        deadline = time.monotonic() + self.settings.stop_grace_s
        while time.monotonic() < deadline and any(ch.requests for ch in list(server.active_channels.values())):
            wasyncore.loop(timeout=0.1, map=self._map, use_poll=True, count=1)
        busy = sum(1 for ch in server.active_channels.values() if ch.requests)
        if busy:
            log.warning("%s: %d request(s) still in service after %.0f s; closing them", self.settings.name, busy,
                        self.settings.stop_grace_s)
        for ch in list(server.active_channels.values()):
            ch.cancel()
        wasyncore.close_all(self._map, ignore_all=True)
        server.task_dispatcher.shutdown(cancel_pending=True, timeout=1 if busy else self.settings.stop_grace_s)
        log.info("%s: stopped", self.settings.name)


def raise_fd_limit(wanted: int) -> None:
    """Raise this process's soft limit on open files to `wanted` (within the hard limit), for the connections."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-file limit from %d to %d: %s", soft, target, exc)
        else:
            return
    if soft != resource.RLIM_INFINITY and soft < wanted:
        log.warning("the open-file limit is %d: fewer connections than %d fit (LimitNOFILE= in the unit)", soft, wanted)


def quiet_web_server_logs() -> None:
    """waitress warns "Task queue depth is N" for every request that waits for a thread: under a flood that is a
    line per request, so it goes through a rate limit with a counter (`shared.log_limit`)."""
    from shared.log_limit import RateLimitFilter

    queue_log = logging.getLogger("waitress.queue")
    if not any(isinstance(f, RateLimitFilter) for f in queue_log.filters):
        queue_log.addFilter(RateLimitFilter(queue_log, "requests waiting for a free thread"))


class InServiceLimit:
    """WSGI middleware: at most `limits[(method, path)]` such requests in service at once; one more is answered
    429 with Retry-After at once, before the app (and its sessions, templates, database) is reached.

    For endpoints that are expensive on purpose (a password check): under a flood the refusals cost a few
    microseconds each, so the requests queued behind them (a health check, a page) are still served quickly.
    """

    def __init__(self, app: Callable, limits: dict[tuple[str, str], int], retry_after_s: int = 1) -> None:
        self.app, self.limits, self.retry_after_s = app, dict(limits), retry_after_s
        self._lock = threading.Lock()
        self._in_service: dict[tuple[str, str], int] = {}
        self.refused = 0

    def __call__(self, environ: dict, start_response: Callable):  # noqa: ANN204
        key = (environ.get("REQUEST_METHOD", ""), environ.get("PATH_INFO", ""))
        limit = self.limits.get(key)
        if limit is None:
            return self.app(environ, start_response)
        with self._lock:
            taken = self._in_service.get(key, 0)
            if taken >= limit:
                self.refused += 1
                refuse = True
            else:
                self._in_service[key] = taken + 1
                refuse = False
        if refuse:
            message = "busy: too many of these requests at once; try again in a second"
            if key[1].startswith("/api/"):  # an API answers JSON, with the reason code its clients read
                body, kind = json.dumps({"ok": False, "reason": "busy", "error": message}).encode(), "application/json"
            else:
                body, kind = (message + "\n").encode(), "text/plain; charset=utf-8"
            start_response("429 Too Many Requests", [("Content-Type", kind),
                                                     ("Content-Length", str(len(body))),
                                                     ("Retry-After", str(self.retry_after_s))])
            return [body]
        try:
            result = self.app(environ, start_response)
            return list(result) if not hasattr(result, "close") else _closing_list(result)
        finally:
            with self._lock:
                self._in_service[key] -= 1


def _closing_list(result) -> list:  # noqa: ANN001
    try:
        return list(result)
    finally:
        result.close()
