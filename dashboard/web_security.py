"""Web security of the people's pages: server-side sessions (log in/out, who is logged in), role checks,
a per-session CSRF token, and the security headers on every response."""
from __future__ import annotations

import datetime as dt
import functools
import hmac
import secrets
from typing import Callable, Optional

import sqlalchemy as sa
from flask import Response, abort, redirect, request, session, url_for

from dashboard.db import get_db
from dashboard.models import DASHBOARD_ROLES, User, WebSession, utcnow
from dashboard.services import services
from dashboard.station_tokens import hash_token

SESSION_MAX_AGE_S = 12 * 3600  # a page session ends after this even if the browser stays open


def current_user() -> Optional[User]:
    """The user of the request's server-side session (None when absent, logged out, expired or superseded)."""
    sid = session.get("sid")
    if not isinstance(sid, str) or not sid:
        return None
    db = get_db()
    row = db.get(WebSession, hash_token(sid))
    now = utcnow()
    if row is None or (now - row.created_at).total_seconds() > SESSION_MAX_AGE_S:
        session.clear()
        return None
    return db.get(User, row.user_id)


def log_in(user: User) -> None:
    """A fresh random session id in the cookie (the old cookie's session, if any, is ended first)."""
    old = session.get("sid")
    session.clear()
    sid = secrets.token_urlsafe(32)
    with services().writer() as db:
        if isinstance(old, str):
            db.execute(sa.delete(WebSession).where(WebSession.id_hash == hash_token(old)))
        db.execute(sa.delete(WebSession).where(WebSession.created_at < utcnow() - dt.timedelta(seconds=SESSION_MAX_AGE_S)))
        db.add(WebSession(id_hash=hash_token(sid), user_id=user.id, created_at=utcnow()))
        db.commit()
    session["sid"] = sid
    session["csrf"] = secrets.token_urlsafe(24)


def log_out() -> None:
    """End the session on the server: a copy of the cookie no longer works."""
    sid = session.get("sid")
    session.clear()
    if isinstance(sid, str):
        with services().writer() as db:
            db.execute(sa.delete(WebSession).where(WebSession.id_hash == hash_token(sid)))
            db.commit()


def login_required(admin: bool = False) -> Callable:
    """Decorator: the API answers 401/403 in JSON; pages redirect to the login form."""

    def deco(view: Callable) -> Callable:
        @functools.wraps(view)
        def wrapper(*args, **kwargs):  # noqa: ANN202
            user = current_user()
            if user is None:
                if request.path.startswith("/api/"):
                    abort(401, "log in first (viewer session required)")
                return redirect(url_for("pages.login", next=request.full_path))
            if user.role not in DASHBOARD_ROLES:
                abort(403, f"{user.role} accounts sign in at their desk, not on the dashboard")
            if admin and user.role != "admin":
                abort(403, "admin role required")
            return view(*args, **kwargs)

        return wrapper

    return deco


def csrf_token() -> str:
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(24)
    return session["csrf"]


def check_csrf() -> None:
    sent = request.form.get("csrf_token", "") or request.headers.get("X-CSRF-Token", "")
    if not sent or not hmac.compare_digest(sent, session.get("csrf", "")):
        abort(400, "the form expired or did not come from this site (CSRF token mismatch); reload the page")


# Every response: no framing (clickjacking), no MIME sniffing, no referrer leaks, and a CSP that allows only
# this site's own scripts, styles, images and event stream (the page has no inline script or handler).
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
                               "form-action 'self'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def add_security_headers(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response
