"""Exponential back-off with jitter: the delays of a retry loop, with no clock and no sleeping.

The n-th delay after a `reset()` is `initial_s * 2**(n - 1)`, capped at `max_s`, then scaled by a factor
drawn uniformly from [1 - jitter, 1 + jitter) (so a jittered delay may exceed `max_s` by `jitter * max_s`).
Used by the edge's link (reconnects), the edge's network camera (reopens) and the recognizer's outbox
(per sink). `rng` returns floats in [0, 1); pass `random.Random(seed).random` (or a constant) for
repeatable delays.
"""
from __future__ import annotations

import random
from typing import Callable


class Backoff:
    """Delays that double from `initial_s` up to `max_s` (seconds), each jittered by +/- `jitter` (a fraction)."""

    def __init__(self, initial_s: float, max_s: float, jitter: float = 0.0,
                 rng: Callable[[], float] = random.random) -> None:
        if not 0 < initial_s <= max_s:
            raise ValueError(f"back-off needs 0 < initial_s <= max_s, got {initial_s} and {max_s}")
        if not 0 <= jitter < 1:
            raise ValueError(f"back-off jitter must be in [0, 1), got {jitter}")
        self.initial_s, self.max_s, self.jitter, self._rng = initial_s, max_s, jitter, rng
        self._next = initial_s
        self._failures = 0

    @property
    def failures(self) -> int:
        """How many delays were handed out since the last `reset()` (0: none; the next is the first)."""
        return self._failures

    def next_delay(self) -> float:
        """The delay to wait now; the one after it is twice as long (capped)."""
        base = self._next
        self._next = min(self._next * 2, self.max_s)  # doubling a float, never 2**n: no overflow however long
        self._failures += 1
        if not self.jitter:
            return base
        return base * (1.0 - self.jitter + 2.0 * self.jitter * self._rng())

    def reset(self) -> None:
        """After a success: the next delay is `initial_s` again."""
        self._next = self.initial_s
        self._failures = 0
