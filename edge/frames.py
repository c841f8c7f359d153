"""The newest frame, handed from one producer thread to any number of waiting consumers.

The pattern of picamera2's `mjpeg_server_2.py`: the producer publishes into a holder guarded by a
`Condition`; each consumer remembers the sequence number it last took and waits for a newer one,
so nobody polls and nobody is handed the same frame twice. Only the newest frame is kept: a slow
consumer skips frames instead of building a backlog.
"""
from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass
from typing import Any, Deque, Generic, Optional, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Frame(Generic[T]):
    """One published item: `seq` counts up from 1, `ts` is the wall-clock time (s) it was published;
    `meta`: what goes with it (an annotated frame's face list), None when nothing does."""

    seq: int
    data: T
    ts: float
    meta: Any = None


class LatestFrame(Generic[T]):
    """Holds the newest published item (a BGR array, or JPEG bytes) and wakes whoever waits for it.

    Several holders may share one `Condition` so that a consumer can wait for "either changed".
    """

    def __init__(self, condition: Optional[threading.Condition] = None) -> None:
        self.condition = condition if condition is not None else threading.Condition()
        self._frame: Optional[Frame[T]] = None
        self._closed = False

    def publish(self, data: T, ts: Optional[float] = None, meta: Any = None) -> Frame[T]:
        """Replace the held item and wake every waiting consumer; returns the new Frame."""
        with self.condition:
            seq = self._frame.seq + 1 if self._frame is not None else 1
            self._frame = Frame(seq, data, time.time() if ts is None else ts, meta)
            self.condition.notify_all()
            return self._frame

    def latest(self) -> Optional[Frame[T]]:
        """The newest frame, or None before the first publish."""
        with self.condition:
            return self._frame

    @property
    def seq(self) -> int:
        """Sequence number of the newest frame (0 before the first publish)."""
        with self.condition:
            return self._frame.seq if self._frame is not None else 0

    def wait_for_frame(self, previous_seq: int, timeout: Optional[float] = None) -> Optional[Frame[T]]:
        """Block until a frame newer than `previous_seq` exists and return it.

        Returns None on timeout or once `close()` was called.
        """
        with self.condition:
            ready = self.condition.wait_for(
                lambda: self._closed or (self._frame is not None and self._frame.seq > previous_seq), timeout
            )
            if not ready or self._closed:
                return None
            return self._frame

    def close(self) -> None:
        """Wake every waiter for good; later waits return None at once."""
        with self.condition:
            self._closed = True
            self.condition.notify_all()

    @property
    def closed(self) -> bool:
        with self.condition:
            return self._closed


class RateMeter:
    """Events per second over a sliding window (e.g. results received); not thread-safe by itself."""

    def __init__(self, window_s: float = 2.0) -> None:
        self.window_s = window_s
        self._times: Deque[float] = collections.deque()

    def tick(self, now: Optional[float] = None) -> None:
        now = time.monotonic() if now is None else now
        self._times.append(now)
        self._trim(now)

    def rate(self, now: Optional[float] = None) -> float:
        """Events per second in the last `window_s` seconds (0.0 with fewer than two events)."""
        now = time.monotonic() if now is None else now
        self._trim(now)
        if len(self._times) < 2:
            return 0.0
        span = max(now - self._times[0], self._times[-1] - self._times[0])
        return (len(self._times) - 1) / span if span > 0 else 0.0

    def _trim(self, now: float) -> None:
        while self._times and now - self._times[0] > self.window_s:
            self._times.popleft()

