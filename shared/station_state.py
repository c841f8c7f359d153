"""What can be wrong with a desk, in words a supervisor understands: the codes a recognizer reports in a station's
status (`degraded`) and the sentence the dashboard shows for each. Pure: no I/O."""
from __future__ import annotations

from typing import Any, Iterable

# reported by a recognizer in the status body's `degraded` list (a desk may have several at once)
DEGRADED_REASONS = {
    "slow": "Recognizer overloaded: too few frames per second for reliable checks",
    "disk_full": "Alerts held back: the recognizer's disk is full",
    "alerts_degraded": "Alerts delayed: the recognizer cannot deliver them to the dashboard",
}
MAX_DEGRADED = 8


class BadStationState(ValueError):
    """A status report's `degraded` list that cannot be accepted; the text is the reason."""


def parse_degraded(value: Any) -> tuple[str, ...]:
    """The `degraded` field of a status report: a list of known codes (empty or missing: nothing degraded)."""
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > MAX_DEGRADED:
        raise BadStationState(f"degraded must be a list of at most {MAX_DEGRADED} of: {', '.join(DEGRADED_REASONS)}")
    unknown = [v for v in value if v not in DEGRADED_REASONS]
    if unknown:
        raise BadStationState(f"degraded code {str(unknown[0])[:40]!r} is not one of {', '.join(DEGRADED_REASONS)}")
    return tuple(dict.fromkeys(value))


def join_codes(codes: Iterable[str]) -> str:
    return ",".join(codes)


def split_codes(text: str | None) -> tuple[str, ...]:
    return tuple(c for c in (text or "").split(",") if c in DEGRADED_REASONS)
