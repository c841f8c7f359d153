"""The edge's pages: `/` (to the feed page), `/video_feed_page` (feed, status, Capture) and `/signin`."""
from __future__ import annotations

from flask import Blueprint, Response, redirect, render_template, url_for

from edge.auth import may_enrol, may_view
from edge.web.access import csrf_token, signed_in
from edge.web.state import edge_state

bp = Blueprint("pages", __name__)


@bp.get("/")
def index() -> Response:
    return redirect(url_for("pages.video_feed_page"))


@bp.get("/video_feed_page")
def video_feed_page():  # noqa: ANN201
    state = edge_state()
    auth = state.auth
    who = signed_in()
    if auth is not None and not may_view(who, auth.desk()):
        return redirect(url_for("pages.signin_page"))
    return render_template("video_feed_page.html", station=state.station, auth=auth is not None, user=who,
                           can_enrol=auth is None or may_enrol(who), csrf=csrf_token() if auth is not None else "")


@bp.get("/signin")
def signin_page():  # noqa: ANN201
    state = edge_state()
    auth = state.auth
    if auth is None:
        return redirect(url_for("pages.video_feed_page"))
    return render_template("signin.html", station=state.station, csrf=csrf_token(), user=signed_in(),
                           needed=auth.settings.verify_frames, timeout=auth.settings.verify_timeout_s)
