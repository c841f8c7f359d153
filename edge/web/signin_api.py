"""The edge's sign-in API: `POST /api/signin` (password, then the face check), `GET /api/signin/progress`,
`POST /api/signout` and `GET /api/whoami`. The work is `edge.auth.SignIn`'s; these carry its cookie."""
from __future__ import annotations

from flask import Blueprint, abort, jsonify, request, session

from edge.auth import SignIn, may_view
from edge.web.access import signed_in
from edge.web.state import edge_state

bp = Blueprint("signin_api", __name__)


def _auth() -> SignIn:
    """The sign-in service, or 404 when sign-in is off at this edge."""
    auth = edge_state().auth
    if auth is None:
        abort(404, "sign-in is off at this edge (--auth off)")
    return auth


@bp.post("/api/signin")
def api_signin():  # noqa: ANN202
    auth = _auth()
    payload = request.get_json(silent=True) if request.is_json else request.form
    username = str((payload or {}).get("username", ""))
    password = str((payload or {}).get("password", ""))
    session.pop("sid", None)
    session.pop("attempt", None)
    status, body = auth.password(username, password)
    if "sid" in body:  # staff/admin without an enrolled face: signed in by password
        session["sid"] = body.pop("sid")
    if "attempt" in body:  # the face check runs; the cookie names the attempt, which is not a session
        session["attempt"] = body.pop("attempt")
    return jsonify(body), status


@bp.get("/api/signin/progress")
def api_signin_progress():  # noqa: ANN202
    body = _auth().progress(session.get("attempt", ""))
    if body is None:
        abort(404, "no sign-in in progress")
    if body["state"] == "signed_in":
        session["sid"] = body.pop("sid")
        session.pop("attempt", None)
    elif body["state"] == "failed":
        session.pop("attempt", None)
    return jsonify(body)


@bp.post("/api/signout")
def api_signout():  # noqa: ANN202
    ended = _auth().sign_out(session.pop("sid", None))
    return jsonify({"ok": ended})


@bp.get("/api/whoami")
def api_whoami():  # noqa: ANN202
    """The caller's own session only; who sits at the desk is told to those allowed to watch it."""
    auth = edge_state().auth
    who = signed_in()
    desk = auth.desk() if auth is not None else None
    return jsonify({"auth": auth is not None, "signed_in": who is not None,
                    "username": who.username if who else None, "role": who.role if who else None,
                    "desk": desk.username if desk is not None and may_view(who, desk) else None})
