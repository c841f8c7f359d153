"""In-process publish/subscribe for the live page: bounded queue per subscriber, slow ones dropped."""
from __future__ import annotations

import logging
import queue
import threading
from typing import Iterator, Optional

log = logging.getLogger(__name__)


class Subscription:
    """One live-page connection's queue of (event, data) pairs."""

    def __init__(self, maxsize: int) -> None:
        self.queue: "queue.Queue[tuple[str, str]]" = queue.Queue(maxsize=maxsize)
        self.dropped = False

    def get(self, timeout: float) -> Optional[tuple[str, str]]:
        try:
            return self.queue.get(timeout=timeout)
        except queue.Empty:
            return None


class Broker:
    """Fan-out of events; `publish` never blocks, whatever the subscribers do."""

    def __init__(self, queue_size: int = 256) -> None:
        self._queue_size = queue_size
        self._subs: set[Subscription] = set()
        self._lock = threading.Lock()
        self.closed = threading.Event()

    def subscribe(self, limit: Optional[int] = None) -> Optional[Subscription]:
        """A new subscription, or None when `limit` subscribers are already there (checked and taken at once)."""
        sub = Subscription(self._queue_size)
        with self._lock:
            if limit is not None and len(self._subs) >= limit:
                return None
            self._subs.add(sub)
        log.debug("live subscriber added (%d now)", len(self._subs))
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            self._subs.discard(sub)

    def publish(self, event: str, data: str) -> None:
        with self._lock:
            subs = list(self._subs)
        for sub in subs:
            try:
                sub.queue.put_nowait((event, data))
            except queue.Full:
                sub.dropped = True
                self.unsubscribe(sub)
                log.warning("dropped a live subscriber that fell %d events behind", self._queue_size)

    @property
    def subscriber_count(self) -> int:
        with self._lock:
            return len(self._subs)

    def close(self) -> None:
        """Make every stream end (server shutdown)."""
        self.closed.set()

    @staticmethod
    def busy(limit: int, retry_s: float = 30.0) -> Iterator[str]:
        """The whole stream for a page turned away at `limit` live pages: a `busy` event and a slower retry."""
        yield f"retry: {int(retry_s * 1000)}\n\n"
        yield f"event: busy\ndata: {limit} live pages already open; this one updates by polling\n\n"

    def stream(self, sub: Subscription, heartbeat_s: float) -> Iterator[str]:
        """Server-Sent Events text for one subscriber, with keep-alive comments; ends when dropped or closed."""
        try:
            yield "retry: 2000\n\n"
            while not self.closed.is_set() and not sub.dropped:
                item = sub.get(heartbeat_s)
                if item is None:
                    yield ": keep-alive\n\n"
                    continue
                event, data = item
                yield f"event: {event}\ndata: {data}\n\n"
        finally:
            self.unsubscribe(sub)
