"""The database: engine and sessions for any SQLAlchemy URL, a session per request (`get_db`, set up by `init_app`),
and schema migrations (Alembic, shipped in the package)."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import sqlalchemy as sa
from flask import Flask, current_app, g
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
SESSIONS_EXT = "facemon.db"  # app.extensions key of the per-request session factory


class DatabaseError(RuntimeError):
    """The database cannot be used (driver missing, unreachable, wrong schema); the message says what to do."""


def make_engine(url: str, keys=None) -> Engine:  # noqa: ANN001 - shared.crypto.KeyRing
    """Engine for `url`; creates the folder of a SQLite file and makes SQLite safe under concurrent writers.

    `keys` (a shared.crypto.KeyRing): sealed columns (evidence, encodings, photos, review faces) are encrypted with
    it on the way in and opened on the way out."""
    try:
        parsed = make_url(url)
    except sa.exc.ArgumentError as exc:
        raise DatabaseError(f"cannot parse database URL {url!r}: {exc}") from None
    backend = parsed.get_backend_name()
    kwargs: dict = {"future": True}
    if backend == "sqlite":
        db = parsed.database
        if db and db != ":memory:" and not db.startswith("file:"):
            Path(db).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
    else:
        kwargs["pool_pre_ping"] = True
        kwargs["pool_recycle"] = 1800
    if not (backend == "sqlite" and parsed.database in (None, "", ":memory:")):
        # One connection per concurrent request (the threaded server runs one thread per request).
        kwargs["pool_size"] = 10
        kwargs["max_overflow"] = 30
        kwargs["pool_timeout"] = 10
    try:
        engine = sa.create_engine(parsed, **kwargs)
    except ModuleNotFoundError as exc:
        raise DatabaseError(
            f"the driver for {backend} is not installed ({exc.name}); "
            "install requirements-dashboard.txt (PyMySQL for mysql+pymysql, psycopg for postgresql+psycopg)"
        ) from None
    if backend == "sqlite":
        _sqlite_pragmas(engine)
    if keys is not None:
        from dashboard.sealed import DIALECT_ATTR

        setattr(engine.dialect, DIALECT_ATTR, keys)  # per engine, read by dashboard.sealed.Sealed
    return engine


def _sqlite_pragmas(engine: Engine) -> None:
    """WAL so readers never wait for writers; BEGIN IMMEDIATE on write sessions so two writers queue on
    the busy timeout instead of failing with 'database is locked' when a read upgrades to a write."""

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):  # noqa: ANN001
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA busy_timeout = 30000")
        cur.execute("PRAGMA foreign_keys = ON")
        cur.execute("PRAGMA secure_delete = ON")  # deleted evidence and encodings are overwritten, not left in free pages
        if engine.url.database not in (None, "", ":memory:"):
            cur.execute("PRAGMA journal_mode = WAL")
            cur.execute("PRAGMA synchronous = NORMAL")
        cur.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn):  # noqa: ANN001
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("facemon_write") else "BEGIN")


def make_session_factory(engine: Engine, write: bool = False) -> sessionmaker[Session]:
    """Sessions on `engine`; `write=True` ones take SQLite's write lock when they begin (use them short)."""
    bind = engine.execution_options(facemon_write=True) if write else engine
    return sessionmaker(bind=bind, expire_on_commit=False, future=True)


def init_app(app: Flask, sessions: sessionmaker[Session]) -> None:
    """Give `app` a database session per request from `sessions` (`get_db`), closed when the request ends."""
    app.extensions[SESSIONS_EXT] = sessions
    app.teardown_appcontext(close_db)


def get_db() -> Session:
    """The request's database session, closed when the request ends."""
    if "db" not in g:
        g.db = current_app.extensions[SESSIONS_EXT]()
    return g.db


def close_db(_exc: Optional[BaseException] = None) -> None:
    session = g.pop("db", None)
    if session is not None:
        session.close()

def _alembic_config(engine: Engine):  # noqa: ANN202 - alembic imported lazily
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["engine"] = engine
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to `revision` (idempotent; a fresh database gets every table)."""
    from alembic import command

    log.info("database %s: upgrading schema to %s", engine.url.render_as_string(hide_password=True), revision)
    try:
        command.upgrade(_alembic_config(engine), revision)
    except sa.exc.OperationalError as exc:
        raise DatabaseError(f"cannot reach or change the database: {exc.orig}") from None


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()


def safe_url(url: str) -> str:
    """The URL with any password hidden, for logs and messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return "<unparseable URL>"


__all__ = ["DatabaseError", "make_engine", "make_session_factory", "init_app", "get_db", "close_db", "upgrade", "current_revision", "head_revision", "safe_url"]
