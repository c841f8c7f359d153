"""Validation of incoming alert messages into plain values (no Flask, no database)."""
from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import json
import uuid
from dataclasses import dataclass
from typing import Any, Mapping, Optional

from dashboard.models import ALERT_STATES, ALERT_TYPES
from shared.names import InvalidName, validate_name


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


def parse_legacy(body: Any, token_station: Optional[str], now: dt.datetime) -> tuple[AlertMessage, bytes]:
    """Map the seeds' `{login_name, time, type, image(base64)}` to an opening alert and its JPEG bytes.

    The seeds sent a bare time of day and no zone: a time without a date is taken as today, and one
    without a zone as the server's local zone. The ids derive from the content, so a resend is a duplicate.
    """
    if not isinstance(body, Mapping):
        raise BadAlert("body must be a JSON object")
    missing = [k for k in ("time", "type", "image") if body.get(k) in (None, "")]
    if missing:
        raise BadAlert(f"missing required field(s): {', '.join(missing)}")
    station = body.get("station_id") or token_station
    if not station:
        raise BadAlert("station_id is required with a service token")
    station = parse_station(station)
    login = parse_login(body.get("login_name"))
    kind = parse_type(body["type"])
    started = _legacy_time(body["time"], now)
    image_b64 = body["image"]
    if not isinstance(image_b64, str):
        raise BadAlert("image must be a base64 string")
    if image_b64.startswith("data:"):
        image_b64 = image_b64.partition(",")[2]
    try:
        image = base64.b64decode(image_b64, validate=True)
    except (binascii.Error, ValueError):
        raise BadAlert("image is not valid base64") from None
    key = hashlib.sha256(f"{station}\0{login}\0{kind}\0{started.isoformat()}".encode()).hexdigest()
    msg = AlertMessage(
        event_id=key[:32], alert_id=key[32:], station_id=station, login_name=login, type=kind,
        state="open", started_at=started, ended_at=None, details={"source": "legacy /dashboard"},
    )
    return msg, image


def _legacy_time(value: Any, now: dt.datetime) -> dt.datetime:
    if not isinstance(value, str):
        raise BadAlert("time must be a string")
    text = value.strip()
    try:
        when = fromiso(text)
    except ValueError:
        try:
            clock = dt.time.fromisoformat(text)
        except ValueError:
            raise BadAlert(f"time {text[:64]!r} is neither an ISO-8601 date-time nor a time of day") from None
        local_now = now.astimezone()
        when = dt.datetime.combine(local_now.date(), clock.replace(tzinfo=None), tzinfo=clock.tzinfo)
    if when.tzinfo is None:
        when = when.astimezone()  # the server's local zone
    return when
