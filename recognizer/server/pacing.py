"""The recognizer's frames shared fairly among its stations: each edge is told the rate it can be served at.

Without it every edge sends as fast as its window lets it, so 20 desks race for two cores: each frame waits
behind every other desk's, latency grows to the whole window and a desk that loses the race gets fewer frames.
Instead the server tells each edge its share (`max_fps` in WELCOME and in every RESULT; docs/protocol.md), the
same for every station and never more than `max_fps`. Edges space their frames to it (shared/pacing.py), so
frames arrive evenly and are answered at once.

The share has two parts:

- A ceiling from the CPU a frame costs (`FairShare`): the station threads' CPU seconds plus the encoder processes'
  for the faces' encodings, averaged over recent frames of all stations; the cores (`utilisation` of them) serve
  that many frames a second, divided among the connected stations. Until `warmup_frames` were measured a frame
  is assumed to cost `prior_cost_ms` (25 ms), so a lone desk starts at its camera's rate (never under
  `station_fps`: many desks start at that and the control cuts it where it is too much).
- What is actually served (`ShareController`): the CPU model assumes the cores are the recognizer's. When they
  are not (other programs, a container's CPU quota), stations told the ceiling send more than they are served;
  their frames wait in the edges' windows and latency grows to the whole window. So each station thread reports,
  for every frame, how long it took from its read to its reply and whether the station's next frame was already
  waiting when it was done: the station is *backlogged*, it sends faster than it is served. Once a second: when
  the stations were backlogged two seconds running, the share is cut to `margin` x what the backlogged stations
  were served (at most halved in one step; not again before the frames already in the windows could drain), so
  a frame is answered as it comes; while they wait for their frames it is raised gradually (`raise_step` a
  second; faster while less than one frame is in service on average), back up to the ceiling. A station whose
  camera is slower than its share is not backlogged, so it never pulls the others' share down (the fault of the
  stop-22 attempt, which compared the rate served with the rate told and ratcheted down). A station's first
  frames (a new face's first encodings are waited for) are not counted.

`station_fps` is the rate a station is planned for (blink liveness needs about 10 frames/s: a blink lasts
100-400 ms): when the share falls below it the server says so in its log (too many desks for this machine;
docs/sizing.md).
"""
from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Hashable, Optional

from recognizer.settings import check_value

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ControlParams:
    """How the share follows what is served (`ShareController`). `interval_s`: how often it is judged;
    `backlog_high` / `backlog_low`: share of frames that found the station's next frame already waiting above which
    the share is cut, below which it may rise; `margin`: the share after a backlog, as a fraction of what the
    backlogged stations were served; `window`: the frames an edge keeps in flight (the server's `max_in_flight`);
    `min_wait_s`: a backlog is let be while a window of frames takes less than this (frames quick next to the
    camera's spacing find the next one waiting without any wait worth a cut); `raise_step`: fraction the share
    rises by per interval while nothing waits (`raise_min_fps` at least; `fast_raise` while less than one frame
    is in service on average);
    `min_frames`: fewer frames in an interval say nothing (and the share goes back to the ceiling: the stations
    are gone or paused); `floor_fps`: the least any station is told; `settle_frames`: a station's first frames
    are not counted (its start: a new face's first encodings are waited for)."""

    enabled: bool = True
    interval_s: float = 1.0
    backlog_high: float = 0.3
    backlog_low: float = 0.1
    margin: float = 0.9
    window: int = 2
    min_wait_s: float = 0.1
    raise_step: float = 0.1
    raise_min_fps: float = 0.25
    fast_raise: float = 0.5
    min_frames: int = 5
    floor_fps: float = 0.5
    settle_frames: int = 10

    def __post_init__(self) -> None:
        if not 0.05 <= self.interval_s <= 30:
            raise ValueError(f"interval_s must be 0.05..30 s, got {self.interval_s}")
        if not 0 <= self.backlog_low < self.backlog_high <= 1:
            raise ValueError(f"need 0 <= backlog_low < backlog_high <= 1, got {self.backlog_low}, {self.backlog_high}")
        if not 0.3 <= self.margin <= 1:
            raise ValueError(f"margin must be 0.3..1, got {self.margin}")
        if not 0 < self.raise_step <= self.fast_raise <= 2:
            raise ValueError(f"need 0 < raise_step <= fast_raise <= 2, got {self.raise_step}, {self.fast_raise}")
        if self.window < 1 or not 0 <= self.min_wait_s <= 10:
            raise ValueError(f"need window >= 1 and min_wait_s 0..10 s, got {self.window}, {self.min_wait_s}")
        if self.min_frames < 1 or self.floor_fps <= 0 or self.raise_min_fps < 0 or self.settle_frames < 0:
            raise ValueError("min_frames must be >= 1, floor_fps > 0, raise_min_fps >= 0 and settle_frames >= 0")


@dataclass(frozen=True)
class PacingParams:
    """`station_fps`: the rate each station is planned for (frames/s); `max_fps`: the most any station is told
    (a camera faster than this gains nothing); `utilisation`: share of the cores the stations' frames are planned
    to fill (the rest absorbs uneven frames, sweeps and the sockets); `warmup_frames`: frames measured before the
    first estimate; `prior_cost_ms`: what a frame is assumed to cost until then (one face, 640x480, liveness on:
    measured 15-25 ms on a 2-core box), so one desk starts at a camera's rate instead of `station_fps` (which cost a
    lone desk ~20 frames of its first 1.3 s); never under `station_fps` (sixteen desks started at their prior share
    of 4.5 took ~10 s to climb to the 7 served); `control`: how the share follows what is served (`enabled`
    False: the CPU model alone, as before stop 24)."""

    station_fps: float = 15.0
    max_fps: float = 30.0
    utilisation: float = 0.9
    warmup_frames: int = 20
    prior_cost_ms: float = 25.0
    control: ControlParams = field(default_factory=ControlParams)

    def __post_init__(self) -> None:
        check_value("station_fps", self.station_fps, "station_fps")
        check_value("max_station_fps", self.max_fps, "max_fps")
        if self.station_fps > self.max_fps:
            raise ValueError(f"need station_fps <= max_fps, got {self.station_fps} and {self.max_fps}")
        if not 0.1 <= self.utilisation <= 1.0:
            raise ValueError(f"utilisation must be 0.1..1, got {self.utilisation}")
        if self.warmup_frames < 1:
            raise ValueError("warmup_frames must be at least 1")
        if not 1.0 <= self.prior_cost_ms <= 10_000.0:
            raise ValueError(f"prior_cost_ms must be 1..10000, got {self.prior_cost_ms}")


@dataclass
class _Tally:
    """One station's frames in the current interval."""

    first: float  # when its first frame in the interval was done
    last: float = 0.0
    frames: int = 0
    backlogged: int = 0

    def rate(self, elapsed: float) -> float:
        """Frames/s it was served: over the span of its frames (a pause between rows of frames is not counted)."""
        span = self.last - self.first
        return (self.frames - 1) / span if self.frames >= 3 and span > 0 else self.frames / elapsed


class ShareController:
    """The share each station is told, following what the stations are served (see the module's text). Pure and
    not thread-safe: the caller passes the time in and holds a lock (`FairShare`)."""

    def __init__(self, params: ControlParams) -> None:
        self.params = params
        # frames/s told to all stations together (None: the ceiling, until the stations' frames were judged once); a
        # total, so that a station joining or leaving moves everyone's share at once
        self._total: Optional[float] = None
        self.last_reason = ""  # what moved the share last (logs, tests)
        self._start: Optional[float] = None
        self._tally: dict[Hashable, _Tally] = {}
        self._walls: list[float] = []
        self._backlogged = False  # the last interval judged was backlogged
        self._drained_at = 0.0  # after a cut to what is served: when the edges' windows should have drained

    def served(self, station: Hashable, now: float, wall_s: float, backlogged: bool, nth: int = 1 << 30) -> None:
        """A frame of `station` was done at `now` after `wall_s` from its read to its reply; `backlogged`: the
        station's next frame was already waiting then; `nth`: the station's how many-th frame it was (its first
        `settle_frames` are not counted: a new face's first encodings are waited for, which says nothing of the
        share, and a room's desks all start at once)."""
        if nth <= self.params.settle_frames:
            return
        t = self._tally.setdefault(station, _Tally(now))
        t.last = now
        t.frames += 1
        t.backlogged += bool(backlogged)
        self._walls.append(max(0.0, wall_s))

    def rate(self, now: float, ceiling: float, stations: int = 1) -> float:
        """The share at `now` (frames/s per station) for `stations` connected ones, never above `ceiling` (the CPU
        model's share). Judged each `interval_s` once there are two frames a station to judge by (longer while the
        shares are small, at most 5 intervals)."""
        p = self.params
        if not p.enabled:
            return ceiling
        if self._start is None:
            self._start = now
        elif now - self._start >= p.interval_s and (
                len(self._walls) >= 2 * stations or now - self._start >= 5 * p.interval_s):
            self._judge(now, now - self._start, ceiling, max(stations, 1))
            self._start, self._tally, self._walls = now, {}, []
        if self._total is None:
            return ceiling
        # never above the ceiling; a ceiling that comes down takes the share with it, one that goes up (a cheaper
        # frame) is followed only step by step, as the stations are seen to keep up
        self._total = min(self._total, ceiling * max(stations, 1))
        return self._total / max(stations, 1)

    def _judge(self, now: float, elapsed: float, ceiling: float, stations: int) -> None:
        p = self.params
        frames = len(self._walls)
        if frames < p.min_frames:  # no stations, all paused or all starting: what was learnt is stale
            log.debug("share back to the ceiling: %d frames in %.1f s", frames, elapsed)
            self._total, self._backlogged, self._drained_at = None, False, 0.0
            return
        current = ceiling if self._total is None else min(self._total / stations, ceiling)
        backlog = sum(t.backlogged for t in self._tally.values()) / frames
        busy = sum(self._walls) / elapsed  # frames in service on average (Little's law)
        p90 = sorted(self._walls)[min(frames - 1, int(0.9 * frames))]
        p50 = sorted(self._walls)[frames // 2]
        # backlogged, and a window of frames waits long enough to matter (quick frames at camera rate often find the
        # next one already there, waiting a few ms)
        was_backlogged, self._backlogged = self._backlogged, (
            backlog > p.backlog_high and p.window * p50 >= p.min_wait_s)
        if self._backlogged and not was_backlogged:
            log.debug("share held: backlog %.0f %% (%d frames), once", backlog * 100, frames)
            return  # one interval could be a stall (a new face's first encodings waited for): the next one says
        if self._backlogged:
            if now < self._drained_at:
                log.debug("share held at %.1f while the windows drain: backlog %.0f %%", current, backlog * 100)
                return
            # stations send faster than they are served: each is told what the backlogged ones got, less a margin
            # (so their windows drain), but never under half the current share in one step (a one-off stall)
            served = [t.rate(elapsed) for t in self._tally.values() if t.backlogged * 2 >= t.frames]
            got = sum(served) / len(served) if served else current
            target = p.margin * got
            new, reason = min(current, max(current * 0.5, target)), f"backlog {backlog:.0%}"
            if new <= target:
                # the frames already in the windows drain at what is served less what is sent: no second cut before
                # they could have (a backlog that stays after that is a new one)
                self._drained_at = now + min(5 * p.interval_s, p.window / max(got - target, 0.1))
        elif backlog < p.backlog_low or busy < 1.0:
            step = p.fast_raise if busy < 1.0 else p.raise_step  # under one frame in service: the threads are idle
            new, reason = current + max(p.raise_min_fps, step * current), "stations wait for their frames"
        else:
            log.debug("share held at %.1f: backlog %.0f %% (%d frames)", current, backlog * 100, frames)
            return
        new = max(p.floor_fps, min(new, ceiling))
        log.debug("share %.1f -> %.1f frames/s per station (%s; %d frames, backlog %.0f %%, %.1f in service, p90 %.0f "
                  "ms)", current, new, reason, frames, backlog * 100, busy, p90 * 1e3)
        self._total, self.last_reason = new * stations, reason


class FairShare:
    """Frame cost measured across all stations, each station's share of the capacity (`ShareController` on top of
    the CPU model). Thread-safe; `clock` gives the time (monotonic seconds)."""

    def __init__(self, params: PacingParams = PacingParams(), cores: Optional[float] = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.params = params
        self.cores = float(cores if cores is not None else len(os.sched_getaffinity(0)))
        self._clock = clock
        self._lock = threading.Lock()
        self._control = ShareController(params.control)
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

    def frame_served(self, station: Hashable, wall_s: float, backlogged: bool, nth: int = 1 << 30) -> None:
        """The `nth` frame of `station` took `wall_s` (wall time) from its read to its reply; `backlogged`: the
        station's next frame was already waiting then (`ShareController.served`)."""
        with self._lock:
            self._control.served(station, self._clock(), wall_s, backlogged, nth)

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

    def ceiling(self, stations: int) -> float:
        """Each station's share of what the cores serve at the measured cost (at `prior_cost_ms` until measured)."""
        p = self.params
        capacity = self.capacity_fps()
        if capacity is None:  # a desk or a few: as fast as the prior allows; many: the planned rate (the control
            # cuts it within seconds where it is too much; starting under it, the share took ~10 s to climb)
            prior = self.cores * p.utilisation * 1e3 / p.prior_cost_ms
            return max(p.station_fps, min(p.max_fps, prior / max(stations, 1)))
        return min(p.max_fps, capacity / max(stations, 1))

    def rate(self, stations: int) -> float:
        """The frames/s each of `stations` connected stations is told it can send."""
        p = self.params
        ceiling = self.ceiling(stations)
        with self._lock:
            share = self._control.rate(self._clock(), ceiling, stations)
        short = share < p.station_fps
        if short != self._short:
            self._short = short
            if short:
                log.warning("%d stations need %.0f frames/s at %.0f each; this recognizer serves about %.0f (%.1f ms "
                            "of CPU a frame, %g cores%s): each is served %.1f frames/s", stations,
                            stations * p.station_fps, p.station_fps, share * max(stations, 1),
                            self.cost_ms or p.prior_cost_ms, self.cores, f"; {self._control.last_reason}" if self._control.last_reason else "", share)
            else:
                log.info("every station is served at least %.0f frames/s again", p.station_fps)
        return round(max(share, 0.5), 1)
