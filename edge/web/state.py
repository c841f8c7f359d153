"""What the edge's web app reads (`EdgeState`: display JPEGs, the link, the stop event, sign-in), and how a request finds it."""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Protocol

from flask import current_app

from edge.auth import SignIn
from edge.frames import LatestFrame

EXT = "facemon_edge"


class Link(Protocol):
    """What the page needs from `edge.link.RecognizerLink`."""

    def status(self) -> dict: ...

    def enrol(self, name: str, timeout: float = 10.0, grant: str = "") -> dict: ...


@dataclass
class EdgeState:
    """What the web app reads: the display JPEGs, the link, and the process-wide stop event."""

    display: LatestFrame
    link: Link
    stop: threading.Event
    station: str = "edge"
    feed_mode: Callable[[], str] = lambda: "unknown"
    camera_status: Callable[[], dict] = dict
    enrol_timeout_s: float = 10.0
    auth: Optional[SignIn] = None  # None: the page is open (--auth off, the standalone demo)
    secret_key: str = ""  # signs the session cookie when auth is on
    enrolment_log: Optional[Path] = None  # who enrolled whom and when (JSON lines), when auth is on
    max_viewers: int = 6  # live feeds at once (each holds one of the web server's threads)
    _viewers: int = field(default=0, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def join_viewer(self, limit: int) -> Optional[int]:
        """Take a viewer's place: the number watching now, or None when `limit` are watching already."""
        with self._lock:
            if self._viewers >= limit:
                return None
            self._viewers += 1
            return self._viewers

    def viewer_left(self) -> int:
        with self._lock:
            self._viewers -= 1
            return self._viewers

    @property
    def viewers(self) -> int:
        with self._lock:
            return self._viewers


def edge_state() -> EdgeState:
    """The state of the app serving this request (set by `create_app`)."""
    return current_app.extensions[EXT]
