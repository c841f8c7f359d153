"""What an alert row says without opening the CSV: who was expected, who or what was seen, the distance and its
band, the reason, and how long it lasted. Pure: from an alert as `store.alert_to_dict` gives it."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Optional

from dashboard.station_state import describe_duration

# Bands of dlib's 128-D face distance (Euclidean); 0.6 is the model's usual same-person limit, and the
# recognizer accepts a name at 0.58 or closer by default (docs/recognition.md).
BANDS = ((0.45, "close: surely the same person"), (0.60, "near: likely the same person"),
         (0.70, "borderline"), (float("inf"), "far: a different person"))

TAMPER_REASONS = {
    "black": "picture black", "covered": "lens covered", "frozen": "picture frozen",
    "camera_lost": "camera lost (no frames from it)",
}
CLOSED_BY = {
    "station_disconnected": "desk disconnected", "recognizer_stopped": "recognizer stopped",
    "camera_back": "camera back", "station_back": "desk back",
    "station_moved": "desk moved to another recognizer node", "recognizer_restart": "recognizer restarted",
}


@dataclass(frozen=True)
class AlertSummary:
    expected: str  # who should be at the desk ("" when nobody is signed in)
    seen: str  # who or what was seen
    distance: str  # "0.41 (close: ...)" or ""
    reason: str
    duration: str  # "2 min 5 s" or "2 min 5 s so far"


def distance_band(d: Optional[float]) -> str:
    if d is None:
        return ""
    return f"{d:.2f} ({next(text for limit, text in BANDS if d < limit)})"


def _names(details: dict) -> str:
    names = [str(n) for n in details.get("names") or [] if n]
    return ", ".join(names[:5]) + (" …" if len(names) > 5 else "")


def summarize(alert: dict, now: dt.datetime) -> AlertSummary:
    d = alert.get("details") or {}
    kind = alert.get("type", "")
    expected = str(d.get("expected") or alert.get("login_name") or "")
    seen, reason = "", ""
    if kind == "wrong_person":
        seen, reason = _names(d) or "another enrolled person", f"not {expected or 'the signed-in evaluator'}"
    elif kind == "unknown_face":
        n = d.get("faces") or 1
        seen, reason = f"{n} stranger{'s' if n != 1 else ''}", "nobody enrolled looks like this face"
    elif kind == "multiple_faces":
        seen, reason = f"{d.get('max_faces') or d.get('faces') or 'several'} faces", "more than one person at the desk"
    elif kind == "no_face":
        seen, reason = "nobody", f"desk empty for more than {describe_duration(float(d.get('after_s') or 0))}"
    elif kind in ("no_blink", "eyes_closed"):
        seen = _names(d) or "a face"
        reason = "no blink: possibly a photo or a screen" if kind == "no_blink" else "eyes closed far longer than a blink"
    elif kind == "camera_tamper":
        reasons = d.get("reasons") or ([d["reason"]] if d.get("reason") else [])
        seen = "; ".join(TAMPER_REASONS.get(r, str(r)) for r in reasons) or "camera problem"
        reason = str(d.get("error") or "")
    elif kind == "station_offline":
        seen, reason = "no reports", str(d.get("reason") or "desk gone")
    elif kind == "failed_sign_in":
        seen = str(d.get("username") or "")
        reason = f"{d.get('failures_at_station', '?')} failed sign-ins; last: {d.get('last_reason', '?')}"
    closed_by = CLOSED_BY.get(str(d.get("closed_by") or ""))
    if d.get("closed_by") == "station_moved" and d.get("moved_to"):  # a pool: which node it left, which took it
        closed_by = f"desk moved from recognizer {d.get('moved_from')} to {d.get('moved_to')}"
    if closed_by:
        reason = f"{reason}; ended: {closed_by}" if reason else f"ended: {closed_by}"
    dist = d.get("distance")
    return AlertSummary(expected, seen, distance_band(dist if isinstance(dist, (int, float)) else None), reason,
                        _duration(alert, d, now))


def _duration(alert: dict, d: dict, now: dt.datetime) -> str:
    started, ended = alert.get("started_at"), alert.get("ended_at")
    if not started:
        return ""
    start = dt.datetime.fromisoformat(started)
    if ended:
        seconds = d.get("duration_s")
        if not isinstance(seconds, (int, float)):
            seconds = (dt.datetime.fromisoformat(ended) - start).total_seconds()
        return describe_duration(seconds) if seconds >= 1 else "moment"
    return f"{describe_duration((now - start).total_seconds())} so far"
