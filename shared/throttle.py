"""Throttling of failed sign-ins without handing an attacker a lock-out.

A lock ("5 failures and the account/desk is closed for 5 minutes") lets anyone lock out the real user,
or everyone at a desk, with a few wrong passwords. Instead each key (a desk and account pair, or an
address and account pair) gets an exponential delay: the first `free` failures cost nothing, each one
after that doubles the wait before the next try (5 s, 10 s, 20 s ...) up to `cap_s` (120 s). The rightful user
at another desk, or another account at the same desk, is never slowed; a guesser gets at most one try
per `cap_s` per key. A success, or `forget_s` without a failure, clears the key.

The limit holds when a thousand tries arrive in the same millisecond: `begin(key)` *reserves* a try before
the password (or face) is checked, and a try still being checked counts as a failure for everyone after it.
So N tries sent at once get exactly as many checks as the free allowance (or the one the delay allows), the
same as N tries sent one after another, never N.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

FREE_FAILURES = 5
BASE_DELAY_S = 5.0
MAX_DELAY_S = 120.0


def delay_after(failures: int, free: int = FREE_FAILURES, base_s: float = BASE_DELAY_S, cap_s: float = MAX_DELAY_S) -> float:
    """Seconds to wait after the last of `failures` recent failures before the next try is taken."""
    if failures < free:
        return 0.0
    return min(cap_s, base_s * 2 ** (failures - free))


def wait_before_try(failures: int, pending: int, since_last_s: Optional[float], free: int = FREE_FAILURES,
                    base_s: float = BASE_DELAY_S, cap_s: float = MAX_DELAY_S) -> float:
    """Seconds before one more try may be checked, with `failures` recorded (the latest `since_last_s` ago) and
    `pending` tries still being checked, each counted as a failure: the rule both limiters below apply."""
    n = failures + pending
    if n < free:
        return 0.0
    delay = delay_after(n, free, base_s, cap_s)
    if pending or since_last_s is None:  # the failure time of a try still being checked is not known yet
        return delay
    return max(0.0, delay - since_last_s)


class TooManyFailures(Exception):
    """A try refused before it was checked: `wait_s` seconds to wait (the Retry-After)."""

    def __init__(self, wait_s: float) -> None:
        super().__init__(f"too many failed tries; try again in {int(wait_s) + 1} s")
        self.wait_s = wait_s

    @property
    def retry_after(self) -> int:
        """Whole seconds for a Retry-After header (at least 1)."""
        return int(self.wait_s) + 1


@dataclass
class _Key:
    failures: int = 0
    last: float = 0.0  # time of the latest failure
    in_flight: list = field(default_factory=list)  # start times of reserved tries not yet finished


class FailureThrottle:
    """In-memory exponential delay per key, with tries reserved before they are checked; thread-safe.

    At most `max_keys` keys are kept (the quietest are dropped, never one with a try in flight). A reserved
    try that is never finished is given up after `hold_s` (it then counts as neither failure nor success).
    """

    def __init__(self, free: int = FREE_FAILURES, base_s: float = BASE_DELAY_S, cap_s: float = MAX_DELAY_S,
                 forget_s: float = 900.0, max_keys: int = 10_000, hold_s: float = 120.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.free, self.base_s, self.cap_s, self.forget_s, self.max_keys = free, base_s, cap_s, forget_s, max_keys
        self.hold_s = hold_s
        self._clock = clock
        self._lock = threading.Lock()
        self._keys: dict[str, _Key] = {}  # ordered by last change: the first is the quietest

    def wait_s(self, key: str) -> float:
        """Seconds before `key` may try again (0: now); tries in flight count as failures."""
        with self._lock:
            return self._wait(self._live(key))

    def begin(self, key: str) -> "Try":
        """Reserve a try for `key` before checking it; raises TooManyFailures (with the wait) when none is free.

        Finish it with `failed()`, `succeeded()` or `abandon()` (or use it as a context manager: leaving the
        block without a verdict abandons it, e.g. when the check itself could not be made)."""
        with self._lock:
            entry = self._live(key)
            wait = self._wait(entry)
            if wait:
                raise TooManyFailures(wait)
            if entry is None:
                entry = self._keys[key] = _Key()
            now = self._clock()
            entry.in_flight.append(now)
            self._touch(key, entry)
            return Try(self, key, now)

    def failed(self, key: str) -> float:
        """Count a failure that was not reserved (e.g. one reported afterwards); returns the wait it imposes."""
        with self._lock:
            return self._fail(key, None)

    def succeeded(self, key: str) -> None:
        with self._lock:
            self._keys.pop(key, None)

    # ---- called by Try ----

    def _finish(self, key: str, started: float, verdict: Optional[bool]) -> float:
        with self._lock:
            if verdict is False:
                return self._fail(key, started)
            entry = self._keys.get(key)
            if entry is not None:
                _drop(entry.in_flight, started)
                if verdict is True:
                    del self._keys[key]
                elif not entry.failures and not entry.in_flight:
                    del self._keys[key]
            return 0.0

    # ---- under the lock ----

    def _wait(self, entry: Optional[_Key]) -> float:
        if entry is None:
            return 0.0
        since = self._clock() - entry.last if entry.failures else None
        return wait_before_try(entry.failures, len(entry.in_flight), since, self.free, self.base_s, self.cap_s)

    def _fail(self, key: str, started: Optional[float]) -> float:
        entry = self._live(key) or _Key()
        if started is not None:
            _drop(entry.in_flight, started)
        entry.failures += 1
        entry.last = self._clock()
        self._keys[key] = entry
        self._touch(key, entry)
        return delay_after(entry.failures, self.free, self.base_s, self.cap_s)

    def _touch(self, key: str, entry: _Key) -> None:
        """Move `key` to the end (the most recent) and keep at most `max_keys` keys."""
        self._keys.pop(key, None)
        self._keys[key] = entry
        if len(self._keys) <= self.max_keys:
            return
        for old in list(self._keys):
            if len(self._keys) <= self.max_keys:
                break
            if not self._keys[old].in_flight:
                del self._keys[old]

    def _live(self, key: str) -> Optional[_Key]:
        entry = self._keys.get(key)
        if entry is None:
            return None
        now = self._clock()
        entry.in_flight = [t for t in entry.in_flight if now - t <= self.hold_s]
        if entry.failures and now - entry.last > self.forget_s:
            entry.failures = 0
        if not entry.failures and not entry.in_flight:
            del self._keys[key]
            return None
        return entry


def _drop(starts: list, started: float) -> None:
    try:
        starts.remove(started)
    except ValueError:  # given up after hold_s already
        pass


class Try:
    """One reserved try (from `FailureThrottle.begin`); finish it once."""

    def __init__(self, throttle: FailureThrottle, key: str, started: float) -> None:
        self._throttle, self.key, self._started = throttle, key, started
        self.done = False

    def failed(self) -> float:
        """The try failed: it counts; returns the wait it imposes on the next."""
        return self._end(False)

    def succeeded(self) -> None:
        """The try succeeded: the key's failures are cleared."""
        self._end(True)

    def abandon(self) -> None:
        """The try was not checked (service down, cancelled): it counts as nothing."""
        self._end(None)

    def _end(self, verdict: Optional[bool]) -> float:
        if self.done:
            return 0.0
        self.done = True
        return self._throttle._finish(self.key, self._started, verdict)

    def __enter__(self) -> "Try":
        return self

    def __exit__(self, *exc: object) -> None:
        self.abandon()


class InFlight:
    """Tries being checked now, per key, for a limit whose failures are recorded elsewhere (the dashboard's
    database), so that tries sent at once are held to the same count as tries sent one by one.

    `begin(key)` registers a try and notes how many tries of the key were then still being checked; read the
    recorded failures *after* it, and `Ticket.check(failures, since_last_s)` refuses the try when those plus the
    ones ahead reach the limit. A try ahead that records its failure before the read is counted twice (a
    stricter answer, never a looser one); one that records it after is counted by the note. End every ticket
    (it is a context manager) after its failure is recorded.
    """

    def __init__(self, free: int = FREE_FAILURES, base_s: float = BASE_DELAY_S, cap_s: float = MAX_DELAY_S) -> None:
        self.free, self.base_s, self.cap_s = free, base_s, cap_s
        self._lock = threading.Lock()
        self._pending: dict[str, int] = {}

    def begin(self, key: str) -> "Ticket":
        with self._lock:
            ahead = self._pending.get(key, 0)
            self._pending[key] = ahead + 1
        return Ticket(self, key, ahead)

    def pending(self, key: str) -> int:
        with self._lock:
            return self._pending.get(key, 0)

    def _end(self, key: str) -> None:
        with self._lock:
            n = self._pending.get(key, 0) - 1
            if n > 0:
                self._pending[key] = n
            else:
                self._pending.pop(key, None)


class Ticket:
    """One try registered with `InFlight.begin`; `ahead`: tries of its key being checked when it began."""

    def __init__(self, owner: InFlight, key: str, ahead: int) -> None:
        self._owner, self.key, self.ahead = owner, key, ahead
        self._ended = False

    def check(self, failures: int, since_last_s: Optional[float]) -> None:
        """Raise TooManyFailures when this try must wait, given the failures recorded for its key."""
        wait = wait_before_try(failures, self.ahead, since_last_s, self._owner.free, self._owner.base_s,
                               self._owner.cap_s)
        if wait:
            raise TooManyFailures(wait)

    def end(self) -> None:
        if not self._ended:
            self._ended = True
            self._owner._end(self.key)

    def __enter__(self) -> "Ticket":
        return self

    def __exit__(self, *exc: object) -> None:
        self.end()
