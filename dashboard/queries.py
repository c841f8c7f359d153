"""Alert queries from a request's parameters: filters, paging, and one page of alerts (for the API and the pages)."""
from __future__ import annotations

import datetime as dt
from typing import Optional

from flask import abort

from dashboard import store
from dashboard.db import get_db
from shared.alert_wire import BadAlert, fromiso, in_range, parse_type

MAX_PER_PAGE = 200
MAX_PAGE = 1_000_000  # beyond it the SQL OFFSET overflows a 64-bit integer on some backends
FILTER_KEYS = ("station", "login_name", "type", "state", "from", "to")  # the query parameters a filter reads
PAGE_KEYS = ("page", "per_page")


def known_args(args, keys: tuple[str, ...] = FILTER_KEYS + PAGE_KEYS) -> dict[str, str]:  # noqa: ANN001
    """The non-empty parameters among `keys`: what a page may copy into its own links. Anything else a query
    string carries is dropped here, so it can never reach `url_for` as a keyword (`endpoint`, `_method` ...)."""
    return {k: args.get(k) for k in keys if args.get(k)}


def filter_from_args(args) -> store.AlertFilter:  # noqa: ANN001 - a MultiDict
    """Filters from query parameters station, login_name, type, state, from, to (dates or ISO times)."""
    state = args.get("state") or None
    if state and state not in store.FILTER_STATES:
        abort(400, f"state must be one of {', '.join(store.FILTER_STATES)}")
    kind = args.get("type") or None
    if kind:
        try:
            kind = parse_type(kind)
        except BadAlert as exc:
            abort(400, str(exc))
    return store.AlertFilter(
        station=args.get("station") or None, login_name=args.get("login_name") or None, type=kind, state=state,
        date_from=_date_arg(args.get("from"), "from", end=False), date_to=_date_arg(args.get("to"), "to", end=True),
    )


def _date_arg(value: Optional[str], what: str, end: bool) -> Optional[dt.datetime]:
    """A date (whole day, in UTC; `to` inclusive) or an ISO date-time (naive = UTC)."""
    if not value:
        return None
    try:
        if len(value) == 10:
            when = dt.datetime.combine(dt.date.fromisoformat(value), dt.time(), tzinfo=dt.timezone.utc)
        else:
            when = fromiso(value)
    except ValueError:
        abort(400, f"{what} {value[:40]!r} is not a date (YYYY-MM-DD) or ISO-8601 time")
    when = when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)
    try:
        in_range(when, what)
    except BadAlert as exc:
        abort(400, str(exc))
    return when + dt.timedelta(days=1) if len(value) == 10 and end else when


def page_args(args) -> tuple[int, int]:  # noqa: ANN001
    try:
        page, per_page = int(args.get("page", 1)), int(args.get("per_page", 50))
    except ValueError:
        abort(400, "page and per_page must be whole numbers")
    if not 1 <= page <= MAX_PAGE or not 1 <= per_page <= MAX_PER_PAGE:
        abort(400, f"page must be between 1 and {MAX_PAGE} and per_page between 1 and {MAX_PER_PAGE}")
    return page, per_page


def alerts_page(args) -> tuple[list[dict], int, int, int]:  # noqa: ANN001
    """(alerts as dicts, total matching, page, per_page) for the filters and page in `args`."""
    flt = filter_from_args(args)
    page, per_page = page_args(args)
    db = get_db()
    rows, total = store.list_alerts(db, flt, page, per_page)
    kinds = store.evidence_kinds(db, [a.alert_id for a in rows])
    return [store.alert_to_dict(a, kinds[a.alert_id]) for a in rows], total, page, per_page
