"""Throttling of failed sign-ins without handing an attacker a lock-out.

A lock ("5 failures and the account/desk is closed for 5 minutes") lets anyone lock out the real user,
or everyone at a desk, with a few wrong passwords. Instead each key (a desk and account pair, or an
address and account pair) gets an exponential delay: the first `free` failures cost nothing, each one
after that doubles the wait before the next try (5 s, 10 s, 20 s ...) up to `cap_s` (120 s). The rightful user
at another desk, or another account at the same desk, is never slowed; a guesser gets at most one try
per `cap_s` per key. A success, or `forget_s` without a failure, clears the key.
"""
from __future__ import annotations

import threading
import time
from typing import Callable

FREE_FAILURES = 5
BASE_DELAY_S = 5.0
MAX_DELAY_S = 120.0


def delay_after(failures: int, free: int = FREE_FAILURES, base_s: float = BASE_DELAY_S, cap_s: float = MAX_DELAY_S) -> float:
    """Seconds to wait after the last of `failures` recent failures before the next try is taken."""
    if failures < free:
        return 0.0
    return min(cap_s, base_s * 2 ** (failures - free))


class FailureThrottle:
    """In-memory exponential delay per key; thread-safe; at most `max_keys` keys (the quietest are dropped)."""

    def __init__(self, free: int = FREE_FAILURES, base_s: float = BASE_DELAY_S, cap_s: float = MAX_DELAY_S,
                 forget_s: float = 900.0, max_keys: int = 10_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.free, self.base_s, self.cap_s, self.forget_s, self.max_keys = free, base_s, cap_s, forget_s, max_keys
        self._clock = clock
        self._lock = threading.Lock()
        self._keys: dict[str, tuple[int, float]] = {}  # key -> (failures, time of the last one)

    def wait_s(self, key: str) -> float:
        """Seconds before `key` may try again (0: now)."""
        with self._lock:
            entry = self._live(key)
            if entry is None:
                return 0.0
            n, last = entry
            return max(0.0, delay_after(n, self.free, self.base_s, self.cap_s) - (self._clock() - last))

    def failed(self, key: str) -> float:
        """Count a failure; returns the wait it imposes."""
        with self._lock:
            entry = self._live(key)
            n = (entry[0] if entry else 0) + 1
            self._keys.pop(key, None)
            self._keys[key] = (n, self._clock())  # re-inserted: the dict stays ordered by last failure
            while len(self._keys) > self.max_keys:
                self._keys.pop(next(iter(self._keys)))
            return delay_after(n, self.free, self.base_s, self.cap_s)

    def succeeded(self, key: str) -> None:
        with self._lock:
            self._keys.pop(key, None)

    def _live(self, key: str):  # noqa: ANN202
        entry = self._keys.get(key)
        if entry is not None and self._clock() - entry[1] > self.forget_s:
            del self._keys[key]
            return None
        return entry
