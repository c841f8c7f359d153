"""The audit's web side: `look()` records a look by the logged-in user from the request's address; the admin page
(/admin/audit), its CSV export and the chain check (/api/audit/verify)."""
from __future__ import annotations

from flask import Blueprint, Response, jsonify, render_template, request, stream_with_context

from dashboard import audit
from dashboard.db import get_db
from dashboard.models import utcnow
from dashboard.services import services
from dashboard.web_security import current_user, login_required

bp = Blueprint("audit", __name__)


def look(action: str, subject: str, detail: str = "") -> None:
    """Record that the request's user did `action` on `subject` (committed before the data is sent)."""
    user = current_user()
    audit.record_now(services().writer, user.username if user else "-", action, subject, detail,
                     request.remote_addr or "")


@bp.get("/admin/audit")
@login_required(admin=True)
def page():  # noqa: ANN201
    actor = request.args.get("actor", "")[:64]
    action = request.args.get("action", "")[:32]
    try:
        offset = max(0, int(request.args.get("offset", "0")))
    except ValueError:
        offset = 0
    look("audit.view", "audit", f"actor={actor or '*'} action={action or '*'} offset={offset}")
    db = get_db()
    return render_template("audit.html", entries=audit.search(db, 200, offset, actor, action),
                           report=audit.verify(db), actions=audit.actions(db), actor=actor, action=action, offset=offset)


@bp.get("/admin/audit.csv")
@login_required(admin=True)
def export():  # noqa: ANN201
    look("audit.export", "audit", "all")
    factory = services().sessions

    def rows():  # noqa: ANN202
        with factory() as db:
            yield from audit.export_csv(db)

    resp = Response(stream_with_context(rows()), mimetype="text/csv")
    resp.headers["Content-Disposition"] = f"attachment; filename=facemon-audit-{utcnow():%Y%m%d-%H%M%S}.csv"
    return resp


@bp.get("/api/audit/verify")
@login_required(admin=True)
def verify():  # noqa: ANN201
    report = audit.verify(get_db())
    return jsonify(report.as_dict()), (200 if report.ok else 409)
