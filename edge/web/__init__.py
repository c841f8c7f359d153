"""The edge's web page on :8001: live MJPEG feed, recognizer status, sign-in, and the enrol (Capture) button.

`create_app(edge_state)` builds the Flask app over objects made in `edge.__main__`/`edge.runtime`; nothing
here owns a thread. The blueprints: `pages` (the HTML pages), `feed` (the MJPEG stream), `signin_api`
(sign-in, sign-out, whoami) and `desk_api` (status and Capture); `access` holds the request checks they
share and `state` the `EdgeState` they read.
"""
from __future__ import annotations

from typing import Optional

from flask import Flask

from edge.web import desk_api, feed, pages, signin_api
from edge.web.access import check_csrf, json_error
from edge.web.state import EXT, EdgeState, Link

__all__ = ["EdgeState", "Link", "create_app"]


def create_app(edge_state: EdgeState, test_config: Optional[dict] = None) -> Flask:
    """The edge's Flask app over `edge_state`."""
    # templates/ and static/ stay beside this package, in edge/ (where the package data lists them)
    app = Flask(__name__, template_folder="../templates", static_folder="../static")
    app.config.from_mapping(JSON_SORT_KEYS=False)
    if edge_state.auth is not None:
        if len(edge_state.secret_key) < 32:
            raise ValueError("auth is on but the session key is missing or shorter than 32 characters")
        app.config.update(SECRET_KEY=edge_state.secret_key, SESSION_COOKIE_HTTPONLY=True,
                          SESSION_COOKIE_SAMESITE="Strict", SESSION_COOKIE_NAME="facemon_edge")
    if test_config:
        app.config.update(test_config)
    app.extensions[EXT] = edge_state
    app.before_request(check_csrf)
    app.register_error_handler(401, json_error)
    app.register_error_handler(403, json_error)
    for blueprint in (pages.bp, feed.bp, signin_api.bp, desk_api.bp):
        app.register_blueprint(blueprint)
    return app
