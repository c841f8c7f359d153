"""Fixtures for the dashboard tests: real databases (SQLite file; MariaDB/PostgreSQL when reachable), real JPEGs."""
from __future__ import annotations

import io
import json
import os
import uuid
from pathlib import Path
from typing import Iterator, Optional

import pytest
import sqlalchemy as sa

from dashboard import accounts, station_tokens
from dashboard.app import create_app
from dashboard.config import DashboardConfig
from dashboard.models import Base
from dashboard.services import services

REPO = Path(__file__).resolve().parents[2]
MYSQL_URL = os.environ.get("FACEMON_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test")
PG_URL = os.environ.get("FACEMON_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
PASSWORD = "correct-horse-battery"


def make_jpeg(size: tuple[int, int] = (320, 240), color: tuple[int, int, int] = (180, 120, 90), text: str = "") -> bytes:
    """A real JPEG: a face photo from known_faces/ when there is one, else a drawn picture."""
    from PIL import Image, ImageDraw

    photos = sorted((REPO / "known_faces").rglob("*.jpg"))
    if photos and not text:
        with Image.open(photos[0]) as img:
            img = img.convert("RGB")
            img.thumbnail(size)
            out = io.BytesIO()
            img.save(out, format="JPEG", quality=85)
            return out.getvalue()
    img = Image.new("RGB", size, color)
    draw = ImageDraw.Draw(img)
    draw.ellipse((size[0] // 3, size[1] // 6, 2 * size[0] // 3, 5 * size[1] // 6), fill=(230, 190, 160), outline=(40, 30, 20))
    draw.text((8, 8), text or "facemon test", fill=(255, 255, 255))
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=85)
    return out.getvalue()


def meta(**overrides: object) -> dict:
    """A valid alert meta dict; override any field."""
    base = {
        "event_id": uuid.uuid4().hex, "alert_id": uuid.uuid4().hex, "station_id": "desk-01", "login_name": "alice",
        "type": "unknown_face", "state": "open", "started_at": "2025-05-01T10:15:00+05:30", "ended_at": None,
        "details": {"distance": 0.71},
    }
    base.update(overrides)
    return base


def multipart(m: dict | str, image: Optional[bytes] = None, best: Optional[bytes] = None) -> dict:
    """Flask test-client `data=` for POST /api/alerts."""
    data: dict = {"meta": m if isinstance(m, str) else json.dumps(m)}
    if image is not None:
        data["image"] = (io.BytesIO(image), "evidence.jpg", "image/jpeg")
    if best is not None:
        data["best_image"] = (io.BytesIO(best), "best.jpg", "image/jpeg")
    return data


def _server_database(base_url: str, label: str) -> Iterator[str]:
    """Create a uniquely named database on a reachable server, yield its URL, drop it afterwards."""
    url = sa.engine.make_url(base_url)
    connect_args = {"connect_timeout": 3}
    try:
        admin = sa.create_engine(url, isolation_level="AUTOCOMMIT", connect_args=connect_args)
        with admin.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - any failure to reach the server means skip
        pytest.skip(f"{label} not reachable at {url.render_as_string(hide_password=True)} ({type(exc).__name__}: {str(exc).splitlines()[0][:120]}); "
                    f"set FACEMON_TEST_{'MYSQL' if label == 'MariaDB' else 'PG'}_URL to test against it")
    name = f"facemon_test_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            force = " WITH (FORCE)" if url.get_backend_name() == "postgresql" else ""
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name}{force}"))
        admin.dispose()


@pytest.fixture(scope="session")
def mariadb_url() -> Iterator[str]:
    yield from _server_database(MYSQL_URL, "MariaDB")


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    yield from _server_database(PG_URL, "PostgreSQL")


@pytest.fixture(params=["sqlite", "mariadb", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database URL for each backend; server databases are emptied before every test."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'dashboard.sqlite3'}"
        return
    url = request.getfixturevalue("mariadb_url" if request.param == "mariadb" else "postgres_url")
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        existing = set(sa.inspect(conn).get_table_names())
        for table in reversed(Base.metadata.sorted_tables):
            if table.name in existing:
                conn.execute(table.delete())
    engine.dispose()
    yield url


def build_app(url: str, **cfg: object):
    cfg.setdefault("retention_interval_s", 0)  # the test alerts are dated 2025: no retention pass under a test
    config = DashboardConfig(database_url=url, secret_key="test-secret-key-0123456789", sse_heartbeat_s=0.2, **cfg)
    app = create_app(config)
    app.config["TESTING"] = True
    return app


@pytest.fixture
def app(db_url: str):
    app = build_app(db_url)
    yield app
    services(app).broker.close()
    services(app).engine.dispose()


@pytest.fixture
def sqlite_app(tmp_path: Path):
    """The app on a SQLite file only (for tests that are not about the database backend)."""
    app = build_app(f"sqlite:///{tmp_path / 'dashboard.sqlite3'}")
    yield app
    services(app).broker.close()
    services(app).engine.dispose()


class Tokens:
    def __init__(self, app) -> None:  # noqa: ANN001
        with services(app).sessions() as db:
            self.desk01 = station_tokens.create_token(db, "desk-01", "station")
            self.desk02 = station_tokens.create_token(db, "desk-02", "station")
            self.service = station_tokens.create_token(db, "recognizer-1", "service")

    @staticmethod
    def header(token: str) -> dict:
        return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def tokens(app) -> Tokens:  # noqa: ANN001
    return Tokens(app)


@pytest.fixture
def sqlite_tokens(sqlite_app) -> Tokens:  # noqa: ANN001
    return Tokens(sqlite_app)


def login(client, username: str = "viewer", password: str = PASSWORD) -> None:  # noqa: ANN001
    """Log a test client in through the real form (CSRF token included); the account is made on first use."""
    from dashboard.models import User

    with services(client.application).sessions() as db:
        if db.scalar(sa.select(User).where(User.username == username)) is None:
            accounts.create_user(db, username, PASSWORD, "admin" if username == "admin" else "viewer")
    page = client.get("/login")
    token = page.get_data(as_text=True).split('name="csrf_token" value="')[1].split('"')[0]
    resp = client.post("/login", data={"username": username, "password": password, "csrf_token": token})
    assert resp.status_code == 302, resp.get_data(as_text=True)


def csrf_of(client) -> str:  # noqa: ANN001
    with client.session_transaction() as sess:
        return sess["csrf"]


@pytest.fixture(scope="session")
def jpeg() -> bytes:
    return make_jpeg()


class LiveServer:
    """The dashboard on a real socket (127.0.0.1, ephemeral port) in a thread, served as `serve` serves it
    (the production server, `shared.web_server`)."""

    def __init__(self, app) -> None:  # noqa: ANN001
        from shared.web_server import WebServer

        self.app = app
        config = services(app).config
        settings = config.web_server()
        self.server = WebServer(app, type(settings)(**{**settings.__dict__, "host": "127.0.0.1", "port": 0}),
                                on_stop=services(app).broker.close).start()
        self.url = f"http://127.0.0.1:{self.server.port}"

    def stop(self) -> None:
        self.server.stop()


@pytest.fixture
def live_server(sqlite_app) -> Iterator[LiveServer]:  # noqa: ANN001
    server = LiveServer(sqlite_app)
    yield server
    server.stop()


@pytest.fixture
def live_server_db(app) -> Iterator[LiveServer]:  # noqa: ANN001
    """A live server on each database backend (see `db_url`)."""
    server = LiveServer(app)
    yield server
    server.stop()
