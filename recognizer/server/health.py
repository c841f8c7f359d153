"""Readiness for a balancer: `GET /healthz` on a side port says 200 only when this node should get stations.

Ready means every readiness check passes (the models are loaded, the gallery is loaded) and the node is not
draining. HAProxy's `option httpchk GET /healthz` (deploy/haproxy.cfg) sends new stations only to ready
nodes; a node still loading or stopping answers 503 with the reasons, so it gets none. The body is JSON:
`{ready, node, stations, reasons, ...}` (reasons: what is not ready yet, or why the node drains; a pool node adds
`gallery: {seq, encodings}`, the last gallery change it applied).
"""
from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Optional

log = logging.getLogger(__name__)


class Readiness:
    """Named checks (each a callable: True when that part is ready) and a draining flag. Thread-safe."""

    def __init__(self) -> None:
        self._checks: dict[str, Callable[[], bool]] = {}
        self._draining: Optional[str] = None
        self._lock = threading.Lock()

    def require(self, name: str, check: Callable[[], bool]) -> None:
        """Not ready until `check()` is true (e.g. "models", "gallery")."""
        with self._lock:
            self._checks[name] = check

    def drain(self, reason: str) -> None:
        """From now on not ready, whatever the checks say: the node is stopping."""
        with self._lock:
            self._draining = reason

    @property
    def draining(self) -> bool:
        return self._draining is not None

    def state(self) -> tuple[bool, list[str]]:
        """(ready, reasons it is not)."""
        with self._lock:
            checks, draining = dict(self._checks), self._draining
        reasons = [f"draining: {draining}"] if draining else []
        for name, check in checks.items():
            try:
                ok = bool(check())
            except Exception as exc:  # a check that fails is "not ready", with why; never a broken health port
                log.warning("readiness check %s failed: %s", name, exc)
                ok = False
            if not ok:
                reasons.append(f"{name} not loaded")
        if not checks:
            reasons.append("starting")
        return not reasons, reasons


class HealthServer:
    """A tiny HTTP server for `GET /healthz` (and `/readyz`, the same) on its own thread."""

    def __init__(self, host: str, port: int, readiness: Readiness, node: str,
                 stations: Callable[[], int] = lambda: 0, details: Callable[[], dict] = dict) -> None:
        self.readiness, self.node, self._stations, self._details = readiness, node, stations, details
        self._httpd = ThreadingHTTPServer((host, port), self._handler())
        self._httpd.daemon_threads = True
        self.address: tuple[str, int] = self._httpd.server_address[:2]
        self._thread: Optional[threading.Thread] = None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        health = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                if self.path.split("?", 1)[0] not in ("/healthz", "/readyz"):
                    self._answer(404, {"error": "only /healthz is served here"})
                    return
                ready, reasons = health.readiness.state()
                self._answer(200 if ready else 503, {"ready": ready, "node": health.node,
                                                     "stations": health._stations(), "reasons": reasons,
                                                     **health._details()})

            def _answer(self, code: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, fmt: str, *args: object) -> None:  # checks every 0.5 s: DEBUG, not the log
                log.debug("healthz %s: " + fmt, self.address_string(), *args)

        return Handler

    def start(self) -> tuple[str, int]:
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="healthz", daemon=True)
        self._thread.start()
        log.info("readiness on http://%s:%d/healthz", *self.address)
        return self.address

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
