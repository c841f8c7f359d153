"""Log lines that an attacker can cause, rate-limited with a counter instead of flooding the disk.

A refused login is worth a line; 8,646 of them in 20 s are worth a dozen lines and a count. `RateLimitedLog`
lets the first `per_window` lines of a window through and counts the rest; when the window ends it writes
one line "<what>: ... and 8,645 more in the last minute" (at the next line, or from a timer if none comes).
`RateLimitFilter` does the same for a logger that is not ours (waitress's "Task queue depth" warning).
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Optional

SUMMARY = "%s: ... and %s more in the last %s"


class RateLimitedLog:
    """At most `per_window` lines per `window_s` seconds through `logger`; the rest are counted and told once."""

    def __init__(self, logger: logging.Logger, what: str, per_window: int = 10, window_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic, timer: bool = True) -> None:
        self.logger, self.what, self.per_window, self.window_s = logger, what, per_window, window_s
        self._clock = clock
        self._timer_on = timer
        self._lock = threading.Lock()
        self._start = clock()
        self._passed = 0
        self._held = 0
        self._level = logging.WARNING
        self._timer: Optional[threading.Timer] = None
        self.suppressed_total = 0

    def allow(self, level: int = logging.WARNING) -> bool:
        """True when a line may be written now; otherwise it is counted for the window's summary."""
        summary = None
        with self._lock:
            now = self._clock()
            if now - self._start >= self.window_s:
                summary = self._roll(now)
            if self._passed < self.per_window:
                self._passed += 1
                ok = True
            else:
                self._held += 1
                self.suppressed_total += 1
                self._level = max(self._level, level)
                ok = False
                if self._timer_on and self._timer is None:
                    self._timer = threading.Timer(max(0.0, self._start + self.window_s - now), self.flush)
                    self._timer.daemon = True
                    self._timer.start()
        if summary:
            self.logger.log(*summary)
        return ok

    def log(self, level: int, msg: str, *args: object) -> None:
        if self.allow(level):
            self.logger.log(level, msg, *args)

    def warning(self, msg: str, *args: object) -> None:
        self.log(logging.WARNING, msg, *args)

    def info(self, msg: str, *args: object) -> None:
        self.log(logging.INFO, msg, *args)

    def flush(self) -> None:
        """Write the summary of a window that has ended (the timer calls this)."""
        with self._lock:
            self._timer = None
            now = self._clock()
            summary = self._roll(now) if now - self._start >= self.window_s else None
        if summary:
            self.logger.log(*summary)

    def _roll(self, now: float) -> Optional[tuple]:
        """Start a new window; the summary line of the old one when it held lines back."""
        held, level = self._held, self._level
        self._start, self._passed, self._held, self._level = now, 0, 0, logging.WARNING
        if not held:
            return None
        span = "minute" if self.window_s == 60 else f"{self.window_s:g} s"
        return (level, SUMMARY, self.what, f"{held:,}", span)


class RateLimitFilter(logging.Filter):
    """A logging filter with `RateLimitedLog`'s budget, for a logger whose calls we do not make ourselves."""

    def __init__(self, logger: logging.Logger, what: str, per_window: int = 5, window_s: float = 60.0) -> None:
        super().__init__()
        self._budget = RateLimitedLog(logger, what, per_window, window_s)

    def filter(self, record: logging.LogRecord) -> bool:  # noqa: A003 - logging's hook
        if record.msg is SUMMARY:  # our own count of what was held back
            return True
        return self._budget.allow(record.levelno)
