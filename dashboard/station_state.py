"""A desk's state from its latest status row, in one word and one sentence a supervisor understands. Pure: no I/O.

Why the dashboard decides "offline", not the recognizer: only the dashboard sees every way a desk can vanish. The
recognizer knows when an edge hangs up, but a recognizer that dies (or cannot reach the dashboard) reports
nothing at all, and with several recognizers a desk that moves to another node would look gone to the first. So
a desk is offline when no recognizer has reported it in session for `offline_after_s`, whatever the cause.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Optional

from shared.station_state import DEGRADED_REASONS

# state -> level (the colour on the page): ok, warn (monitoring, but something is wrong), bad (not monitored), off
LEVELS = {"online": "ok", "slow": "warn", "degraded": "warn", "camera_lost": "bad", "leaving": "warn",
          "offline": "bad", "idle": "off", "never": "off"}


@dataclass(frozen=True)
class StationThresholds:
    offline_after_s: float = 15.0  # a desk with a session, unreported this long, is offline (and alerted)
    slow_fps: float = 2.0  # fewer answered frames/s than this, camera working: the recognizer is overloaded


@dataclass(frozen=True)
class StationState:
    state: str  # a key of LEVELS
    text: str  # the sentence shown in the stations table
    since: Optional[dt.datetime] = None

    @property
    def level(self) -> str:
        return LEVELS[self.state]


def describe_duration(seconds: float) -> str:
    """3 s, 2 min 5 s, 1 h 4 min."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s" if s % 60 else f"{s // 60} min"
    return f"{s // 3600} h {s % 3600 // 60} min"


def gone_for(last_connected: Optional[dt.datetime], in_session: bool, last_seen: Optional[dt.datetime],
             now: dt.datetime, window_s: float, silent_after_s: float = float("inf")) -> Optional[float]:
    """Seconds since the desk was last known in session (None: in session now, or never was).

    In session now = the latest report says so, is fresher than `window_s` (reports come every few seconds), and
    the desk was heard (`last_connected`, a frame or a heartbeat) less than `silent_after_s` ago: a desk whose
    cable is pulled stays in session on its recognizer until the recognizer's idle timeout, silent all along."""
    if last_connected is None:
        return None
    gone = max(0.0, (now - last_connected).total_seconds())
    if in_session and last_seen is not None and (now - last_seen).total_seconds() <= window_s and gone < silent_after_s:
        return None
    return gone


def station_state(*, now: dt.datetime, last_seen: Optional[dt.datetime], last_connected: Optional[dt.datetime],
                  recognizer_connected: Optional[bool], fps: Optional[float], camera: Optional[str],
                  camera_error: Optional[str], degraded: tuple[str, ...], report_window_s: float,
                  th: StationThresholds = StationThresholds()) -> StationState:
    """The one state that matters most now, worst first: offline, camera lost, overloaded/degraded, ok."""
    if last_seen is None:
        return StationState("never", "Never connected: start its edge (it needs this station's token)")
    gone = gone_for(last_connected, bool(recognizer_connected), last_seen, now, report_window_s, th.offline_after_s)
    silent = gone is not None and bool(recognizer_connected) and last_seen is not None and \
        (now - last_seen).total_seconds() <= report_window_s  # reported in session, but not heard from
    if gone is not None or not recognizer_connected:
        since = last_connected or last_seen
        at = since.astimezone().strftime("%H:%M:%S")
        if gone is None:  # never had a session: reported (e.g. a recognizer's last word) but not in session
            return StationState("idle", f"No session since {at}", since)
        # the recognizer's last word decides: "it left" (the edge hung up), or silence (the recognizer is gone)
        cause = ("the desk left its recognizer (edge unplugged, switched off or network down)"
                 if recognizer_connected is False
                 else "the desk sends nothing, not even heartbeats (network cable pulled or network down)" if silent
                 else "no recognizer reports it (recognizer down, or it cannot reach the dashboard)")
        if gone >= th.offline_after_s:
            return StationState("offline", f"Offline for {describe_duration(gone)} since {at}: {cause}", since)
        return StationState("leaving", f"Gone for {describe_duration(gone)}: {cause}; an alert follows at "
                                       f"{describe_duration(th.offline_after_s)}", since)
    if camera == "lost":
        return StationState("camera_lost", f"Camera lost{': ' + camera_error if camera_error else ''} "
                                           "(unplugged, covered or failed; the desk is not monitored)")
    if fps is not None and fps < th.slow_fps:
        return StationState("slow", f"{DEGRADED_REASONS['slow']}: {fps:.1f} frames/s (needs {th.slow_fps:g})")
    if "slow" in degraded:  # the recognizer's own word: its share per desk is under the rate desks are planned for
        others = [DEGRADED_REASONS[c] for c in degraded if c != "slow"]
        served = f"it serves each desk {fps:.1f} frames/s, too few" if fps else "too few frames per second"
        return StationState("slow", "; ".join([f"Recognizer overloaded: {served} for reliable checks (too many desks "
                                               "for this recognizer: add a node or move desks, docs/sizing.md)"]
                                              + others))
    if degraded:
        return StationState("degraded", "; ".join(DEGRADED_REASONS[c] for c in degraded))
    return StationState("online", "Monitoring")
