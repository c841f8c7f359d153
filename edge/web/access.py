"""Who is asking, on the edge's pages: the signed-in session, the viewer check, and the CSRF token of POSTs.

With sign-in off (`EdgeState.auth is None`: --auth off, the standalone demo) the page is open and these pass.
"""
from __future__ import annotations

import hmac
import secrets
from typing import Optional

from flask import abort, jsonify, request, session

from edge.auth import EdgeSession, may_view
from edge.web.state import edge_state


def signed_in() -> Optional[EdgeSession]:
    auth = edge_state().auth
    return auth.session(session.get("sid")) if auth is not None else None


def require_viewer() -> None:
    """401 without a session, 403 for a role that may not watch this desk (no-op when auth is off)."""
    auth = edge_state().auth
    if auth is None:
        return
    who = signed_in()
    if who is None:
        abort(401, "sign in first")
    if not may_view(who, auth.desk()):
        abort(403, "only staff, admins and the evaluator signed in at this desk may watch it")


def csrf_token() -> str:
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(24)
    return session["csrf"]


def check_csrf() -> None:
    """Before every request: a POST must carry the session's CSRF token (when sign-in is on)."""
    if edge_state().auth is not None and request.method == "POST":
        sent = request.headers.get("X-CSRF-Token", "") or request.form.get("csrf_token", "")
        if not sent or not hmac.compare_digest(sent, session.get("csrf", "")):
            abort(403, "missing or wrong CSRF token; reload the page")


def json_error(exc):  # noqa: ANN001, ANN201
    """401 and 403 answered as JSON {ok, code, reason}, for the page's scripts."""
    return jsonify({"ok": False, "code": exc.code, "reason": exc.description}), exc.code
