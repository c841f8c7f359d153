"""Server-rendered pages: login, the live alert list with filters and acknowledge, station tokens (admin)."""
from __future__ import annotations

import json
import logging
from urllib.parse import urlencode, urlparse

import sqlalchemy as sa
from flask import Blueprint, Response, abort, flash, jsonify, redirect, render_template, request, url_for

from dashboard import stations, store
from dashboard.accounts import ChecksBusy, check_login
from dashboard.audit_pages import look
from dashboard.alert_summary import summarize
from dashboard.db import get_db
from dashboard.models import TOKEN_KINDS, ApiToken, utcnow
from dashboard.queries import FILTER_KEYS, alerts_page, filter_from_args, known_args
from dashboard.services import services
from dashboard.station_tokens import TokenError, create_token, revoke_token
from dashboard.web_security import check_csrf, csrf_token, current_user, log_in, log_out, login_required
from shared.alert_wire import BadAlert, parse_station
from shared.alerts import ALERT_TYPES
from shared.throttle import TooManyFailures

log = logging.getLogger(__name__)
bp = Blueprint("pages", __name__)


@bp.app_context_processor
def _template_globals() -> dict:
    return {"csrf_token": csrf_token, "user": current_user(), "summarize": lambda a: summarize(a, utcnow())}


def _safe_next(target: str | None) -> str:
    """Only same-site paths are followed after login or a form post (no open redirect)."""
    if not target:
        return url_for("pages.index")
    parts = urlparse(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return url_for("pages.index")
    return target


@bp.get("/healthz")
def healthz():  # noqa: ANN201
    get_db().execute(sa.text("SELECT 1"))
    return jsonify(status="ok")


@bp.route("/login", methods=["GET", "POST"])
def login():  # noqa: ANN201
    error = None
    if request.method == "POST":
        check_csrf()
        username = request.form.get("username", "").strip()[:64]
        key = f"{request.remote_addr}|{username}"  # per address and account: guessing never locks the owner out
        svc = services()
        try:
            with svc.login_throttle.begin(key) as attempt:  # reserved before the hash: tries at once count too
                user = check_login(get_db(), username, request.form.get("password", ""), svc.password_checks)
                if user is not None:
                    attempt.succeeded()
                    log.info("user %r logged in", user.username)
                    log_in(user)
                    return redirect(_safe_next(request.args.get("next")))
                delay = attempt.failed()
        except TooManyFailures as exc:
            svc.refusals.warning("login for %r from %s refused: too many failures, %d s to wait", username,
                                 request.remote_addr, exc.retry_after)
            return _login_refused(f"Too many failed logins; try again in {exc.retry_after} s.", exc.retry_after)
        except ChecksBusy as exc:
            svc.refusals.warning("login for %r from %s refused: password checks busy", username, request.remote_addr)
            return _login_refused("The server is busy checking other logins; try again in a second.", exc.retry_after)
        svc.refusals.warning("failed login for %r from %s%s", username, request.remote_addr,
                             f"; next try in {delay:.0f} s" if delay else "")
        error = "Wrong user name or password."
    return render_template("login.html", error=error), (401 if error else 200)


def _login_refused(message: str, retry_after: int) -> Response:
    resp = Response(render_template("login.html", error=message), 429)
    resp.headers["Retry-After"] = str(retry_after)
    return resp


@bp.post("/logout")
def logout():  # noqa: ANN201
    check_csrf()
    log_out()
    return redirect(url_for("pages.login"))


@bp.get("/")
@login_required()
def index():  # noqa: ANN201
    alerts, total, page, per_page = alerts_page(request.args)
    look("alerts.list", f"{len(alerts)} alerts", request.query_string.decode(errors="replace")[:500] or "all")
    desks = stations.list_stations(get_db(), services().station_rules)
    args = known_args(request.args)  # only the parameters the page knows travel into its links
    filters = known_args(request.args, FILTER_KEYS)
    return render_template(
        "index.html", alerts=alerts, total=total, page=page, per_page=per_page, stations=desks,
        types=ALERT_TYPES, states=store.FILTER_STATES, args=args, query=urlencode(args),
        pages=max(1, -(-total // per_page)),
        csv_url=url_for("alerts_api.get_csv") + (f"?{urlencode(filters)}" if filters else ""),
    )


@bp.get("/fragment/alert/<alert_id>")
@login_required()
def alert_fragment(alert_id: str):  # noqa: ANN201
    """One rendered table row for the live page, or 204 when the alert does not match the page's filters."""
    flt = filter_from_args(request.args)
    db = get_db()
    rows, _ = store.list_alerts(db, store.AlertFilter(**{**flt.__dict__, "alert_id": alert_id.lower()}), 1, 1)
    if not rows:
        return Response(status=204)
    kinds = store.evidence_kinds(db, [rows[0].alert_id])
    return render_template("_alert_row.html", a=store.alert_to_dict(rows[0], kinds[rows[0].alert_id]),
                           next_url=_safe_next(request.args.get("next")))


@bp.get("/fragment/stations")
@login_required()
def stations_fragment():  # noqa: ANN201
    return render_template("_stations.html", stations=stations.list_stations(get_db(), services().station_rules))


@bp.post("/alerts/<alert_id>/ack")
@login_required()
def acknowledge(alert_id: str):  # noqa: ANN201
    check_csrf()
    user = current_user()
    alert = store.acknowledge(get_db(), alert_id.lower(), user.username, request.form.get("comment", ""))
    if alert is None:
        abort(404, "no such alert")
    log.info("alert %s acknowledged by %s", alert.alert_id, user.username)
    services().broker.publish("alert", json.dumps({"alert_id": alert.alert_id, "status": "acknowledged"}))
    return redirect(_safe_next(request.form.get("next")))


@bp.get("/admin/tokens")
@login_required(admin=True)
def tokens():  # noqa: ANN201
    return _tokens_page(None, None)


def _tokens_page(new_token: str | None, new_name: str | None) -> str:
    rows = get_db().scalars(sa.select(ApiToken).order_by(ApiToken.revoked_at.is_not(None), ApiToken.name)).all()
    return render_template("tokens.html", tokens=rows, kinds=TOKEN_KINDS, new_token=new_token, new_name=new_name)


@bp.post("/admin/tokens")
@login_required(admin=True)
def tokens_create():  # noqa: ANN201
    check_csrf()
    db = get_db()
    kind = request.form.get("kind", "station")
    try:
        name = parse_station(request.form.get("station_id", ""))
        token = create_token(db, name, kind)
    except (BadAlert, TokenError) as exc:
        flash(str(exc))
        return redirect(url_for("pages.tokens"))
    log.info("token created for %s %s by %s", kind, name, current_user().username)
    return _tokens_page(token, name)  # shown once, in this response only; never stored in clear


@bp.post("/admin/tokens/<int:token_id>/revoke")
@login_required(admin=True)
def tokens_revoke(token_id: int):  # noqa: ANN201
    check_csrf()
    if revoke_token(get_db(), token_id):
        log.info("token %d revoked by %s", token_id, current_user().username)
    else:
        flash("That token does not exist or was already revoked.")
    return redirect(url_for("pages.tokens"))
