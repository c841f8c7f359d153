"""Log lines that an attacker cannot turn into a flood: at most `burst` lines per key per `period_s`, the rest counted.

The count is said, not hidden: the next line let through for that key ends with "(and 8,645 more in the last
minute)", and `flush()` (called from a housekeeping loop) says it for keys that went quiet. Bounded: at most
`max_keys` keys (the oldest forgotten). Thread-safe; no global state (each program holds its own).
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Optional


class LogLimiter:
    """At most `burst` log lines per key (a peer address, a refusal code) per `period_s`; counts what it drops."""

    def __init__(self, burst: int = 5, period_s: float = 10.0, max_keys: int = 4096,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.burst, self.period_s, self.max_keys = burst, period_s, max_keys
        self._clock = clock
        self._seen: dict[str, list] = {}  # key -> [window start, lines in window, suppressed, logger, level]
        self._lock = threading.Lock()

    def allow(self, key: str, now: Optional[float] = None) -> Optional[int]:
        """None: drop this line. Else the number of lines dropped for this key since the last one let through."""
        now = self._clock() if now is None else now
        with self._lock:
            entry = self._seen.get(key)
            if entry is None or now - entry[0] >= self.period_s:
                suppressed = entry[2] if entry is not None else 0
                self._seen.pop(key, None)
                if len(self._seen) >= self.max_keys:
                    del self._seen[next(iter(self._seen))]
                self._seen[key] = [now, 1, 0, None, 0]
                return suppressed
            if entry[1] < self.burst:
                entry[1] += 1
                suppressed, entry[2] = entry[2], 0
                return suppressed
            entry[2] += 1
            return None

    def log(self, logger: logging.Logger, level: int, key: str, msg: str, *args: object) -> None:
        """Log `msg % args` unless `key` is over its budget; says how many lines were dropped before it."""
        suppressed = self.allow(key)
        if suppressed is None:
            with self._lock:
                entry = self._seen.get(key)
                if entry is not None:
                    entry[3], entry[4] = logger, level
            return
        if suppressed:
            msg += " (and %s more like it from %s in the last %s)"
            args = (*args, f"{suppressed:,}", key, self._period())
        logger.log(level, msg, *args)

    def flush(self, now: Optional[float] = None) -> None:
        """Say the count of keys whose window ended with lines dropped (and nothing logged since)."""
        now = self._clock() if now is None else now
        said = []
        with self._lock:
            for key, entry in list(self._seen.items()):
                if entry[2] and entry[3] is not None and now - entry[0] >= self.period_s:
                    said.append((entry[3], entry[4], key, entry[2]))
                    del self._seen[key]
        for logger, level, key, n in said:
            logger.log(level, "... and %s more like it from %s in the last %s", f"{n:,}", key, self._period())

    def _period(self) -> str:
        return "minute" if self.period_s == 60 else f"{self.period_s:g} s"
