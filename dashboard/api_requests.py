"""What every station or service API request needs: the caller its bearer token names, and its JSON object body."""
from __future__ import annotations

from flask import abort, request

from dashboard.services import services
from dashboard.station_tokens import Caller, caller_for


def bearer_caller() -> Caller:
    """The caller of this request's `Authorization: Bearer` token, or abort 401."""
    # Own short session: an intake request must never hold one pooled connection while waiting for another.
    with services().sessions() as db:
        caller = caller_for(db, request.headers.get("Authorization"))
    if caller is None:
        abort(401, "missing or invalid token (send Authorization: Bearer <token>)")
    return caller


def json_object() -> dict:
    """The request's JSON object body, or abort 400."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        abort(400, "send a JSON object")
    return body
