"""Flask app factory: builds the engine, runs migrations, wires the API and the page."""
from __future__ import annotations

import logging
import secrets
from typing import Optional

import sqlalchemy as sa
from flask import Flask, abort, g, jsonify, request
from sqlalchemy.orm import Session
from werkzeug.exceptions import HTTPException

from dashboard import db as dbmod
from dashboard.config import DashboardConfig
from dashboard.events import Broker
from dashboard.models import Setting
from dashboard.security import add_security_headers
from shared.throttle import FailureThrottle

log = logging.getLogger(__name__)
EXT = "facemon"


class Services:
    """What the app holds for its lifetime (built once in create_app, found via app.extensions)."""

    def __init__(self, config: DashboardConfig, engine: sa.Engine) -> None:
        self.config = config
        self.engine = engine
        self.sessions = dbmod.make_session_factory(engine)
        self.writer = dbmod.make_session_factory(engine, write=True)  # short write transactions only
        self.broker = Broker(config.sse_queue_size)
        # viewer logins, per (address, account): exponential delay after sign_in_max_failures, never a lock
        self.login_throttle = FailureThrottle(free=config.sign_in_max_failures, forget_s=config.sign_in_window_s)


def services(app: Optional[Flask] = None) -> Services:
    from flask import current_app

    return (app or current_app).extensions[EXT]


def get_db() -> Session:
    """The request's database session, closed when the request ends."""
    if "db" not in g:
        g.db = services().sessions()
    return g.db


def create_app(config: Optional[DashboardConfig] = None) -> Flask:
    """Build the dashboard for `config` (default: from the environment); migrates the schema unless told not to."""
    config = config or DashboardConfig.from_env()
    engine = dbmod.make_engine(config.database_url)
    if config.auto_upgrade:
        dbmod.upgrade(engine)
    app = Flask(__name__)
    svc = Services(config, engine)
    app.extensions[EXT] = svc
    app.config.update(
        SECRET_KEY=config.secret_key or _stored_secret(svc),
        MAX_CONTENT_LENGTH=config.max_body_bytes,
        MAX_FORM_MEMORY_SIZE=config.max_body_bytes,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=config.secure_cookies,
    )

    from dashboard.api import bp as api_bp
    from dashboard.auth_api import bp as auth_api_bp
    from dashboard.trust_api import bp as trust_api_bp
    from dashboard.views import bp as views_bp

    app.register_blueprint(api_bp)
    app.register_blueprint(auth_api_bp)
    app.register_blueprint(trust_api_bp)
    app.register_blueprint(views_bp)

    @app.before_request
    def _refuse_oversized() -> None:
        # Said before anything is read, with the limit, so a sender knows what to shrink.
        size = request.content_length
        if size is not None and size > config.max_body_bytes:
            abort(413, f"body is {size} bytes, more than the {config.max_body_bytes} allowed")

    app.after_request(add_security_headers)

    @app.teardown_appcontext
    def _close_db(_exc: Optional[BaseException]) -> None:
        session = g.pop("db", None)
        if session is not None:
            session.close()

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):  # noqa: ANN202
        if request.path.startswith("/api/") or request.path == "/dashboard" or request.is_json:
            return jsonify(error=exc.description or exc.name), exc.code
        return exc

    log.info("dashboard ready on database %s", dbmod.safe_url(config.database_url))
    return app


def _stored_secret(svc: Services) -> str:
    """The session key kept in the settings table, created on first start so restarts keep people logged in."""
    with svc.sessions() as db:
        row = db.get(Setting, "secret_key")
        if row is not None:
            return row.value
        value = secrets.token_hex(32)
        db.add(Setting(key="secret_key", value=value))
        try:
            db.commit()
        except sa.exc.IntegrityError:  # another process created it at the same moment
            db.rollback()
            return db.get(Setting, "secret_key").value
        return value
