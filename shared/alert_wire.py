"""The alert event on the wire, once: what the recognizer's outbox sends (`encode_event`) and what the dashboard
accepts (`parse_meta`), with the field rules both sides share. Pure: no Flask, no database, no sockets."""
from __future__ import annotations

import datetime as dt
import json
import uuid
from dataclasses import dataclass
from typing import Any, Optional

from shared.alerts import ALERT_STATES, ALERT_TYPES
from shared.names import InvalidName, validate_name


def iso(t: Optional[float]) -> Optional[str]:
    """POSIX seconds → ISO-8601 with the local zone's offset (e.g. 2025-05-01T10:15:00.123+05:30)."""
    if t is None:
        return None
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).astimezone().isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class AlertEvent:
    """One message about an incident, in the dashboard's vocabulary. Times are POSIX seconds."""

    event_id: str
    alert_id: str
    station_id: str
    login_name: str
    type: str
    state: str  # open | update | closed
    started_at: float
    ended_at: Optional[float]
    details: dict
    image: Optional[bytes] = None  # the evidence at opening (open only)
    best_image: Optional[bytes] = None  # the best frame so far (update/closed, when it changed)


def encode_event(ev: AlertEvent) -> dict:
    """The `meta` JSON object of an alert event (times in POSIX seconds become ISO-8601)."""
    return {
        "event_id": ev.event_id, "alert_id": ev.alert_id, "station_id": ev.station_id, "login_name": ev.login_name,
        "type": ev.type, "state": ev.state, "started_at": iso(ev.started_at), "ended_at": iso(ev.ended_at),
        "details": ev.details,
    }


class BadAlert(ValueError):
    """A message that cannot be accepted; the text is returned to the sender as the reason."""


@dataclass(frozen=True)
class AlertMessage:
    event_id: str
    alert_id: str
    station_id: str
    login_name: str
    type: str
    state: str
    started_at: dt.datetime
    ended_at: Optional[dt.datetime]
    details: dict


REQUIRED = ("event_id", "alert_id", "station_id", "type", "state", "started_at")


def parse_meta(raw: str | bytes, max_details_bytes: int = 16 * 1024) -> AlertMessage:
    """Parse and check the `meta` JSON of POST /api/alerts; raise BadAlert with a reason."""
    try:
        meta = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadAlert(f"meta is not valid JSON: {exc}") from None
    if not isinstance(meta, dict):
        raise BadAlert("meta must be a JSON object")
    missing = [k for k in REQUIRED if meta.get(k) in (None, "")]
    if missing:
        raise BadAlert(f"meta is missing required field(s): {', '.join(missing)}")
    state = meta["state"]
    if state not in ALERT_STATES:
        raise BadAlert(f"state {state!r} is not one of {', '.join(ALERT_STATES)}")
    details = meta.get("details") or {}
    if not isinstance(details, dict):
        raise BadAlert("details must be a JSON object")
    size = len(json.dumps(details, separators=(",", ":")).encode())
    if size > max_details_bytes:
        raise BadAlert(f"details is {size} bytes, more than the {max_details_bytes} allowed")
    return AlertMessage(
        event_id=parse_hex_id(meta["event_id"], "event_id"),
        alert_id=parse_hex_id(meta["alert_id"], "alert_id"),
        station_id=parse_station(meta["station_id"]),
        login_name=parse_login(meta.get("login_name")),
        type=parse_type(meta["type"]),
        state=state,
        started_at=parse_time(meta["started_at"], "started_at"),
        ended_at=None if meta.get("ended_at") in (None, "") else parse_time(meta["ended_at"], "ended_at"),
        details=details,
    )


def parse_hex_id(value: Any, what: str) -> str:
    """A UUID as 32 lowercase hex digits (dashes and braces accepted on input)."""
    if not isinstance(value, str):
        raise BadAlert(f"{what} must be a hex UUID string")
    try:
        return uuid.UUID(value).hex
    except ValueError:
        raise BadAlert(f"{what} {value[:64]!r} is not a hex UUID") from None


def parse_station(value: Any) -> str:
    try:
        return validate_name(value, "station_id")
    except InvalidName as exc:
        raise BadAlert(str(exc)) from None


def parse_login(value: Any) -> str:
    """The evaluator's login name; empty when nobody is signed in at the desk."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return ""
    try:
        return validate_name(value, "login_name")
    except InvalidName as exc:
        raise BadAlert(str(exc)) from None


def parse_type(value: Any) -> str:
    """Known alert type; 'Unknown Face' style spellings of the seeds are accepted."""
    norm = value.strip().lower().replace(" ", "_").replace("-", "_") if isinstance(value, str) else value
    if norm not in ALERT_TYPES:
        raise BadAlert(f"type {value!r} is not one of {', '.join(ALERT_TYPES)}")
    return norm


def parse_time(value: Any, what: str) -> dt.datetime:
    """ISO-8601 with a zone (Z or +hh:mm), returned as an aware datetime."""
    if not isinstance(value, str):
        raise BadAlert(f"{what} must be an ISO-8601 string")
    try:
        when = fromiso(value)
    except ValueError:
        raise BadAlert(f"{what} {value[:64]!r} is not an ISO-8601 time such as 2025-05-01T10:15:00+05:30") from None
    if when.tzinfo is None:
        raise BadAlert(f"{what} {value[:64]!r} has no time zone; add Z or an offset like +05:30")
    return in_range(when, what)


EARLIEST = dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)
LATEST = dt.datetime(2100, 1, 1, tzinfo=dt.timezone.utc)


def in_range(when: dt.datetime, what: str) -> dt.datetime:
    """`when` (aware) if it lies in 2000..2099 UTC; BadAlert otherwise (year 1 or 9999 would overflow later)."""
    try:
        ok = EARLIEST <= when.astimezone(dt.timezone.utc) < LATEST
    except (OverflowError, ValueError):
        ok = False
    if not ok:
        raise BadAlert(f"{what} {when.isoformat()[:40]!r} is out of range: times must fall in the years 2000 to 2099 (UTC)")
    return when


def fromiso(text: str) -> dt.datetime:
    """datetime.fromisoformat that also takes a trailing Z on Python < 3.11."""
    text = text.strip()
    if text[-1:] in ("Z", "z"):
        text = text[:-1] + "+00:00"
    return dt.datetime.fromisoformat(text)
