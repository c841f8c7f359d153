"""People's sessions on the page: who is logged in, role checks, and a per-session CSRF token."""
from __future__ import annotations

import functools
import hmac
import secrets
from typing import Callable, Optional

from flask import abort, redirect, request, session, url_for

from dashboard.models import DASHBOARD_ROLES, User


def current_user() -> Optional[User]:
    from dashboard.app import get_db

    uid = session.get("uid")
    if uid is None:
        return None
    user = get_db().get(User, uid)
    # A changed password hash (or removed user) ends old sessions.
    if user is None or session.get("pw") != user.password_hash[-16:]:
        session.clear()
        return None
    return user


def log_in(user: User) -> None:
    session.clear()
    session["uid"] = user.id
    session["pw"] = user.password_hash[-16:]
    session["csrf"] = secrets.token_urlsafe(24)


def login_required(admin: bool = False) -> Callable:
    """Decorator: the API answers 401/403 in JSON; pages redirect to the login form."""

    def deco(view: Callable) -> Callable:
        @functools.wraps(view)
        def wrapper(*args, **kwargs):  # noqa: ANN202
            user = current_user()
            if user is None:
                if request.path.startswith("/api/"):
                    abort(401, "log in first (viewer session required)")
                return redirect(url_for("views.login", next=request.full_path))
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
