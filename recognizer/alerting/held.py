"""Alert events held in memory while the outbox file cannot be written (disk full, I/O error, read-only).

Pure and bounded: at most `max_events` events and `max_bytes` of images. Over the byte bound the images of the
oldest held events go first (an opening keeps a placeholder, as in the file); over the event bound the oldest
events are dropped, and every drop is counted (`lost`), so the outbox can say exactly what the bound cost.
"""
from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional


@dataclass
class HeldEvent:
    """One event kept in memory: the stored form (meta JSON bytes, images) and the sinks it is still owed to."""

    event_id: str
    alert_id: str
    payload: bytes
    image: Optional[bytes]
    best_image: Optional[bytes]
    sinks_left: list[str]
    created_at: float
    parked: dict[str, str] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return len(self.image or b"") + len(self.best_image or b"")


class HeldEvents:
    """Oldest first; `add` enforces the bounds and returns how many events it had to drop."""

    def __init__(self, max_events: int, max_bytes: int, placeholder: Callable[[], bytes]) -> None:
        self.max_events, self.max_bytes = max_events, max_bytes
        self._placeholder = placeholder
        self._events: "OrderedDict[str, HeldEvent]" = OrderedDict()
        self.bytes = 0
        self.lost = 0  # events dropped over the bound since the outbox started
        self.images_dropped = 0
        self.held_total = 0  # events that went through memory since the outbox started

    def __len__(self) -> int:
        return len(self._events)

    def __iter__(self) -> Iterator[HeldEvent]:
        return iter(list(self._events.values()))

    def __contains__(self, event_id: str) -> bool:
        return event_id in self._events

    def add(self, ev: HeldEvent) -> int:
        if ev.event_id in self._events:
            return 0
        self._events[ev.event_id] = ev
        self.bytes += ev.size
        self.held_total += 1
        for old in list(self._events.values()):
            if self.bytes <= self.max_bytes:
                break
            if old.size and old is not ev:
                self._drop_images(old)
        dropped = 0
        while len(self._events) > self.max_events or (self.bytes > self.max_bytes and len(self._events) > 1):
            self.remove(next(iter(self._events)))
            self.lost += 1
            dropped += 1
        return dropped

    def remove(self, event_id: str) -> Optional[HeldEvent]:
        ev = self._events.pop(event_id, None)
        if ev is not None:
            self.bytes -= ev.size
        return ev

    def _drop_images(self, ev: HeldEvent) -> None:
        meta = json.loads(ev.payload)
        self.bytes -= ev.size
        ev.image = self._placeholder() if meta.get("state") == "open" and ev.image else None
        ev.best_image = None
        meta.setdefault("details", {})["evidence_dropped"] = True
        ev.payload = json.dumps(meta, separators=(",", ":")).encode()
        self.bytes += ev.size
        self.images_dropped += 1
