"""Spacing sends to a frame rate the other side asked for: the edge's half of the recognizer's fair share.

The recognizer tells each edge the rate it can serve it at (`max_fps` in WELCOME and in every RESULT;
docs/protocol.md); the edge sends at most that many frames a second, the freshest camera frame each time,
instead of racing the other desks for the recognizer's CPU. Pure: the caller passes the time in.
"""
from __future__ import annotations

MAX_RATE = 240.0  # frames/s; any larger figure from the peer is treated as this


def rate_from_peer(value: object) -> float:
    """A `max_fps` as received: a number of frames/s, 0 (or absent, unusable, negative) meaning no limit."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        return 0.0
    return min(float(value), MAX_RATE)


class Pacer:
    """At most `rate` sends a second on average (0: no limit); a late send does not earn a burst after it."""

    def __init__(self, rate: float = 0.0) -> None:
        self.rate = 0.0
        self._due: float | None = None
        self.set_rate(rate)

    def set_rate(self, rate: float) -> None:
        rate = rate_from_peer(rate)
        if rate != self.rate and self._due is not None and self.rate > 0 and rate > 0:
            self._due += 1.0 / rate - 1.0 / self.rate  # the next send keeps its place, at the new spacing
        self.rate = rate

    def wait_s(self, now: float) -> float:
        """Seconds until the next send is allowed (0: now)."""
        if self.rate <= 0 or self._due is None:
            return 0.0
        return max(0.0, self._due - now)

    def sent(self, now: float) -> None:
        """A send happened at `now`."""
        if self.rate <= 0:
            self._due = None
            return
        period = 1.0 / self.rate
        # on schedule: the next is due one period after this one was due (sends between camera frames keep the
        # average); more than a period late: one period from now (no burst to catch up)
        base = self._due if self._due is not None and now - self._due < period else now
        self._due = max(base, now - period) + period
