"""The recognizer's frames shared fairly among its stations: each edge is told the rate it can be served at.

Without it every edge sends as fast as its window lets it, so 20 desks race for two cores: each frame waits
behind every other desk's, latency grows to the whole window and a desk that loses the race gets fewer frames.
Instead the server measures what a frame costs (CPU seconds of the station's thread, plus the encoder processes'
CPU for the faces' encodings, an average over recent frames of all stations), works out how many frames a second its cores can serve (`utilisation` of them), and
tells each edge its share (`max_fps` in WELCOME and in every RESULT; docs/protocol.md), never more than
`max_fps`. Edges space their frames to it (shared/pacing.py), so frames arrive evenly and are answered at once.

`station_fps` is the rate a station is planned for (blink liveness needs about 10 frames/s: a blink lasts
100-400 ms): when the share falls below it the server says so in its log (too many desks for this machine;
docs/sizing.md).
"""
from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from typing import Optional

from recognizer.settings import check_value

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PacingParams:
    """`station_fps`: the rate each station is planned for (frames/s); `max_fps`: the most any station is told
    (a camera faster than this gains nothing); `utilisation`: share of the cores the stations' frames are planned
    to fill (the rest absorbs uneven frames, sweeps and the sockets); `warmup_frames`: frames measured before the
    first estimate (until then each station is told `station_fps`)."""

    station_fps: float = 15.0
    max_fps: float = 30.0
    utilisation: float = 0.9
    warmup_frames: int = 20

    def __post_init__(self) -> None:
        check_value("station_fps", self.station_fps, "station_fps")
        check_value("max_station_fps", self.max_fps, "max_fps")
        if self.station_fps > self.max_fps:
            raise ValueError(f"need station_fps <= max_fps, got {self.station_fps} and {self.max_fps}")
        if not 0.1 <= self.utilisation <= 1.0:
            raise ValueError(f"utilisation must be 0.1..1, got {self.utilisation}")
        if self.warmup_frames < 1:
            raise ValueError("warmup_frames must be at least 1")


class FairShare:
    """Frame cost measured across all stations, and each station's share of the capacity. Thread-safe."""

    def __init__(self, params: PacingParams = PacingParams(), cores: Optional[float] = None) -> None:
        self.params = params
        self.cores = float(cores if cores is not None else len(os.sched_getaffinity(0)))
        self._lock = threading.Lock()
        self._cost_s: Optional[float] = None
        self._helper_s = 0.0  # helper processes' CPU not yet counted in a frame
        self._frames = 0
        self._short = False  # the last share told was under station_fps (logged once per change)

    def helper_cost(self, cpu_s: float) -> None:
        """A helper process spent `cpu_s` CPU seconds on the stations' frames (an encoding in the encoder processes):
        counted in the cost of the next frame, so the average is what a frame costs the machine, not only its
        station's thread (~20 % more with a re-check of each face every 30 frames)."""
        with self._lock:
            self._helper_s += max(0.0, cpu_s)

    def frame_cost(self, cpu_s: float) -> None:
        """One frame cost `cpu_s` CPU seconds of its station's thread."""
        with self._lock:
            self._frames += 1
            if self._cost_s is not None and self._frames > self.params.warmup_frames:
                # a rare dear frame (a model built on first use, a full-frame pass) moves the average by a bounded
                # step, so one outlier cannot throttle every station for the next hundred frames
                cpu_s = min(cpu_s, 3 * self._cost_s)
            cpu_s, self._helper_s = cpu_s + self._helper_s, 0.0
            n = min(self._frames, 100)  # a running mean at first, then an average over ~100 frames
            self._cost_s = cpu_s if self._cost_s is None else self._cost_s + (cpu_s - self._cost_s) / n

    @property
    def short(self) -> bool:
        """The last share told was under `station_fps`: too many desks for this machine (reported as `slow`)."""
        return self._short

    @property
    def cost_ms(self) -> Optional[float]:
        """Average CPU ms a frame costs, once `warmup_frames` were measured."""
        with self._lock:
            if self._cost_s is None or self._frames < self.params.warmup_frames:
                return None
            return self._cost_s * 1e3

    def capacity_fps(self) -> Optional[float]:
        """Frames a second this machine's cores can serve at the measured cost (None: not measured yet)."""
        cost = self.cost_ms
        if cost is None:
            return None
        return self.cores * self.params.utilisation * 1e3 / max(cost, 0.1)

    def rate(self, stations: int) -> float:
        """The frames/s each of `stations` connected stations is told it can send."""
        p = self.params
        capacity = self.capacity_fps()
        if capacity is None:
            return p.station_fps
        share = min(p.max_fps, capacity / max(stations, 1))
        short = share < p.station_fps
        if short != self._short:
            self._short = short
            if short:
                log.warning("%d stations need %.0f frames/s at %.0f each; this recognizer serves about %.0f (%.1f ms "
                            "of CPU a frame, %g cores): each is served %.1f frames/s", stations, stations * p.station_fps,
                            p.station_fps, capacity, self.cost_ms or 0.0, self.cores, share)
            else:
                log.info("every station is served at least %.0f frames/s again", p.station_fps)
        return round(max(share, 0.5), 1)
