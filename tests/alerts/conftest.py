"""Real parts for the alert tests: a dashboard on a real socket that can be stopped and started again on the
same port and database file, and a tiny HTTP receiver whose answers a test scripts."""
from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator, Optional

import pytest
import sqlalchemy as sa

from tests.conftest import FIXTURES
from tests.procs import free_port

TOKEN = "test-recognizer-service-token-0001"




class Dashboard:
    """The real dashboard app (temp SQLite file) served by werkzeug on a fixed loopback port; restartable."""

    def __init__(self, db_path: Path, token: str = TOKEN) -> None:
        from dashboard import station_tokens
        from dashboard.services import services

        self.db_url = f"sqlite:///{db_path}"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = token
        self.responses: list[tuple[str, int]] = []  # (path, status) of every request served
        self._server = None
        self._thread: Optional[threading.Thread] = None
        app = self._build()
        with services(app).sessions() as db:
            station_tokens.create_token(db, "recognizer", "service", token)
        self._dispose(app)

    def _build(self):  # noqa: ANN202
        from dashboard.app import create_app
        from dashboard.config import DashboardConfig

        return create_app(DashboardConfig(database_url=self.db_url, secret_key="test-secret-key-0123456789"))

    @staticmethod
    def _dispose(app) -> None:  # noqa: ANN001
        from dashboard.services import services

        services(app).broker.close()
        services(app).engine.dispose()

    def start(self) -> None:
        from werkzeug.serving import make_server

        self.app = self._build()
        inner = self.app.wsgi_app
        responses = self.responses

        def counting(environ, start_response):  # noqa: ANN001, ANN202 - records what the recognizer caused
            def start(status, headers, exc_info=None):  # noqa: ANN001, ANN202
                responses.append((environ.get("PATH_INFO", ""), int(status.split()[0])))
                return start_response(status, headers, exc_info)
            return inner(environ, start)

        self.app.wsgi_app = counting
        self._server = make_server("127.0.0.1", self.port, self.app, threaded=True)
        self._thread = threading.Thread(target=self._server.serve_forever, name="test-dashboard", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)
            self._dispose(self.app)
            self._server = None

    def query(self, sql: str) -> list[tuple]:
        engine = sa.create_engine(self.db_url)
        try:
            with engine.connect() as conn:
                return [tuple(r) for r in conn.execute(sa.text(sql))]
        finally:
            engine.dispose()


@pytest.fixture
def dashboard(tmp_path: Path) -> Iterator[Dashboard]:
    d = Dashboard(tmp_path / "dashboard.sqlite3")
    yield d
    d.stop()


class Receiver:
    """A tiny real HTTP server: answers each POST with the next scripted status (then 200) and keeps the bodies."""

    def __init__(self, port: int = 0, script: tuple[int, ...] = ()) -> None:
        self.script = list(script)
        self.requests: list[tuple[str, dict, bytes]] = []  # (path, headers, body)
        self.answers: list[int] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.requests.append((self.path, dict(self.headers), body))
                code = outer.script.pop(0) if outer.script else 200
                outer.answers.append(code)
                out = json.dumps({"error": "scripted failure"} if code >= 400 else {"status": "ok"}).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args) -> None:  # noqa: ANN002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, name="test-receiver", daemon=True)
        self.thread.start()

    def json_bodies(self) -> list[dict]:
        return [json.loads(b) for _, _, b in self.requests]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


class LogLines(logging.Handler):
    """Collects log records of one logger (the suite runs with -p no:logging, so no caplog)."""

    def __init__(self, name: str) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.logger = logging.getLogger(name)

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.levelname} {record.getMessage()}")

    def __enter__(self) -> "LogLines":
        self.logger.addHandler(self)
        self._old = self.logger.level
        self.logger.setLevel(logging.DEBUG)
        return self

    def __exit__(self, *exc) -> None:  # noqa: ANN002
        self.logger.removeHandler(self)
        self.logger.setLevel(self._old)


@pytest.fixture(scope="session")
def stranger_jpeg() -> bytes:
    return (FIXTURES / "stranger_kit.jpg").read_bytes()
