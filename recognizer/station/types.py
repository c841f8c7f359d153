"""The types that cross the recognizer's layers: what one frame gave (`FrameOutcome`) and what a station's session
looks like at one moment (`StationSnapshot`, frozen: the status reporter and the alert monitor read it from other
threads without a lock). The alert event itself is `shared.alert_wire.AlertEvent` (its wire form lives there)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from shared.results import FaceResult


@dataclass
class FrameOutcome:
    """One processed frame: the faces, the annotated reply JPEG, per-step timings (ms) and faces encoded."""

    faces: list[FaceResult]
    annotated: bytes
    timings_ms: dict = field(default_factory=dict)
    encoded: int = 0  # faces encoded on this frame
    thumb: Optional[np.ndarray] = None  # the frame in grey reduced 8 times (8x8 block means; alert frame statistics)
    draw: Optional[Callable[[], bytes]] = None  # the annotated JPEG made on demand, when `annotated` was not made

    def evidence(self) -> bytes:
        """The annotated JPEG (alert evidence): the reply's, or drawn now (once) when the reply had none."""
        if not self.annotated and self.draw is not None:
            self.annotated, self.draw = self.draw(), None
        return self.annotated


@dataclass(frozen=True)
class StationSnapshot:
    """One connected station as its session saw it after its last message. `session` tells sessions apart (a station
    that reconnects is a new session); times: `connected_at`, `last_seen`, `last_frame_at`, `camera_since` are
    time.time() seconds."""

    session: int
    station: str
    login: str
    peer: str
    connected_at: float
    frames: int = 0
    errors: int = 0
    last_seen: float = 0.0
    fps: float = 0.0
    faces: tuple[FaceResult, ...] = ()  # of the last answered frame
    last_frame_at: float = 0.0  # of the last answered frame
    camera: str = "unknown"  # the edge's camera: ok | lost | unknown (an edge that does not say)
    camera_error: str = ""
    camera_since: float = 0.0  # when the camera state began (for lost: the last frame the edge got)
    annotate: bool = True  # RESULTs carry the annotated JPEG (HELLO `annotate`; False: the edge draws the boxes)
