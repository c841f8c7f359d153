"""Flask app factory: builds the engine and the services, runs migrations, registers the blueprints."""
from __future__ import annotations

import logging
import secrets
from typing import Optional

import sqlalchemy as sa
from flask import Flask, abort, jsonify, request
from werkzeug.exceptions import HTTPException

from dashboard import (alerts_api, audit_pages, desk_auth_api, enrolment_code_api, gallery_api, library, pages, retention,
                       station_watch, trust_api)
from dashboard import data_key
from dashboard import db as dbmod
from dashboard.config import DashboardConfig
from dashboard.models import Setting
from dashboard.services import EXT, Services
from dashboard.web_security import add_security_headers
from shared.web_server import InServiceLimit

log = logging.getLogger(__name__)


def create_app(config: Optional[DashboardConfig] = None) -> Flask:
    """Build the dashboard for `config` (default: from the environment); migrates the schema unless told not to."""
    config = config or DashboardConfig.from_env()
    engine = data_key.open_engine(config)  # DataKeyError: key file missing, malformed or readable by others
    if config.auto_upgrade:
        dbmod.upgrade(engine)
    data_key.check(engine)  # DataKeyError: encrypted data and no key, or another key
    app = Flask(__name__)
    svc = Services(config, engine)
    app.extensions[EXT] = svc
    dbmod.init_app(app, svc.sessions)
    app.config.update(
        SECRET_KEY=config.secret_key or _stored_secret(svc),
        MAX_CONTENT_LENGTH=config.max_body_bytes,
        MAX_FORM_MEMORY_SIZE=config.max_body_bytes,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=config.secure_cookies,
    )
    for blueprint in (alerts_api.bp, desk_auth_api.bp, enrolment_code_api.bp, trust_api.bp, gallery_api.bp, library.bp,
                      pages.bp, audit_pages.bp):
        app.register_blueprint(blueprint)

    @app.before_request
    def _refuse_oversized() -> None:
        # Said before anything is read, with the limit, so a sender knows what to shrink.
        size = request.content_length
        if size is not None and size > config.max_body_bytes:
            abort(413, f"body is {size} bytes, more than the {config.max_body_bytes} allowed")

    app.after_request(add_security_headers)
    # password checks are slow on purpose: beyond a few in service, refuse before Flask is reached, so a flood of
    # them costs microseconds each and the requests queued behind it (a page, /healthz) are served at once
    in_service = config.password_checks_at_once * 2 + 2
    app.wsgi_app = InServiceLimit(app.wsgi_app, {("POST", "/login"): in_service, ("POST", "/api/auth/check"): in_service})

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):  # noqa: ANN202
        if request.path.startswith("/api/") or request.path == "/dashboard" or request.is_json:
            return jsonify(error=exc.description or exc.name), exc.code
        return exc

    retention.start(svc)  # each kind of personal data deleted when its time is up, in whatever server runs this app
    station_watch.start(svc)  # station_offline incidents, in whatever server runs this app
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
