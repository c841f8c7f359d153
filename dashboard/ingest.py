"""Validation of incoming alert messages into plain values (no Flask, no database).

The event's wire shape and its field rules live once in `shared.alert_wire` (the recognizer encodes with the same
module); this module adds the seeds' legacy JSON shape."""
from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
from typing import Any, Mapping, Optional

from shared.alert_wire import AlertMessage, BadAlert, fromiso, parse_login, parse_station, parse_type


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
