"""Detection sweeps: a slow, thorough detector run now and then, whose faces the cheap per-frame path then follows.

dlib's HOG detector (every frame, ~10-40 ms) finds frontal faces only; dlib's CNN (MMOD) detector also finds
faces turned up to ~60 degrees or partly lit, but costs ~1-3 s of one core per 640x360 frame on a small CPU
(and holds the GIL). So on a CPU the CNN runs as a *sweep*: per station every `period_s` (sooner when HOG sees
nobody, lost a track, or a face came or went since the last sweep: recognizer.station.pipeline), in one background process shared by all stations, never on a station's frame path,
and within a budget of CPU time. A sweep also runs HOG upsampled once, which finds small frontal faces
(down to ~40 px) that per-frame HOG at upsample 0 misses.

Faces a sweep finds that per-frame HOG does not are *followers*: each is followed between sweeps by a cheap
correlation tracker (~4 ms per frame) and its box goes to the station's `Tracker` with HOG's, so it is encoded,
named and checked for liveness by the normal path. A follower ends when HOG finds that face itself, when the
correlation tracker loses it, or when the next sweep no longer finds it.

Pure scheduling and follower logic here (tested without dlib); dlib lives in `FaceEngine.sweep` and the
process that calls it.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from typing import Callable, Optional, Protocol, Sequence

import numpy as np

from recognizer.settings import check_section
from recognizer.vision.track import iou
from shared.results import Box

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SweepParams:
    """When and how sweeps run.

    `period_s`: seconds between sweeps of a station whose faces HOG sees; `idle_period_s`: sooner, when HOG sees
    nobody or lost a track; `budget`: most of one CPU core that sweeps of all stations together may use (0..1;
    the next sweep waits until the last one's cost fits); `scale`: sweep on the frame resized by this factor
    (0.25..1; the CNN finds faces from ~80 px at scale 1, HOG upsampled from ~40 px); `cnn_upsample`,
    `hog_upsample`: upsampling of each detector in a sweep; `follow_s`: longest a follower lives without a
    sweep finding it again; `min_quality`: correlation-tracker peak-to-sidelobe ratio under which a follower
    is dropped as lost; `overlap`: IoU at which a sweep face is the same face as a HOG box.
    """

    period_s: float = 2.5
    idle_period_s: float = 1.0
    budget: float = 0.25
    scale: float = 1.0
    cnn_upsample: int = 0
    hog_upsample: int = 1
    follow_s: float = 8.0
    min_quality: float = 6.0
    overlap: float = 0.3
    nice: int = 19

    def __post_init__(self) -> None:
        check_section(self, "sweep")  # period_s, budget (a share of one core), scale: their flags' bounds
        if not 0 < self.idle_period_s <= self.period_s:
            raise ValueError(f"need 0 < idle_period_s <= period_s, got {self.idle_period_s} and {self.period_s}")
        if not (0 <= self.cnn_upsample <= 2 and 0 <= self.hog_upsample <= 2):
            raise ValueError("sweep upsampling must be 0 to 2")
        if self.follow_s <= 0 or self.min_quality < 0 or not 0 < self.overlap <= 1:
            raise ValueError("follow_s must be > 0, min_quality >= 0 and overlap in (0, 1]")
        if not 0 <= self.nice <= 19:
            raise ValueError(f"nice must be 0..19, got {self.nice}")


class SweepSchedule:
    """When one station's next sweep is due, on whatever clock the caller uses (monotonic or clip time)."""

    def __init__(self, params: SweepParams) -> None:
        self.params = params
        self.last: Optional[float] = None

    def due(self, now: float, faces_seen: int, lost: bool) -> bool:
        """True when a sweep should start now: the first frame, every `period_s`, every `idle_period_s` when
        HOG sees nobody or lost a track."""
        if self.last is None:
            return True
        since = now - self.last
        if faces_seen == 0 or lost:
            return since >= self.params.idle_period_s
        return since >= self.params.period_s

    def started(self, now: float) -> None:
        self.last = now


class SweepBudget:
    """One sweep at a time across all stations, and at most `share` of one core over time (thread-safe).

    After a sweep that cost d seconds of CPU, the next may start d / share after the last one started.
    """

    def __init__(self, share: float) -> None:
        if not 0.0 < share <= 1.0:
            raise ValueError(f"share must be in (0, 1], got {share}")
        self.share = share
        self._lock = threading.Lock()
        self._busy = False
        self._next = float("-inf")

    def try_acquire(self, now: float) -> bool:
        with self._lock:
            if self._busy or now < self._next:
                return False
            self._busy = True
            return True

    def release(self, started: float, seconds: float) -> None:
        with self._lock:
            self._busy = False
            self._next = started + max(seconds, 0.0) / self.share


class Follower(Protocol):
    def update(self, rgb: np.ndarray) -> tuple[Box, float]: ...  # new box and tracking quality


FollowerFactory = Callable[[np.ndarray, Box], Follower]


@dataclass
class _Followed:
    follower: Follower
    box: Box
    born: float


def new_faces(found: Sequence[Box], known: Sequence[Box], overlap: float) -> list[Box]:
    """Boxes in `found` that overlap none of `known` by `overlap` IoU or more (and not each other)."""
    out: list[Box] = []
    for box in found:
        if all(iou(box, k) < overlap for k in known) and all(iou(box, o) < overlap for o in out):
            out.append(box)
    return out


class FollowerSet:
    """The faces a sweep found and per-frame HOG did not, followed between sweeps. One per station."""

    def __init__(self, params: SweepParams, start: FollowerFactory) -> None:
        self.params = params
        self._start = start
        self.items: list[_Followed] = []

    def replace(self, found: Sequence[Box], hog_boxes: Sequence[Box], sweep_rgb: np.ndarray,
                rgb: np.ndarray, now: float) -> None:
        """A sweep (of `sweep_rgb`) came back: its faces HOG does not see become the followers, caught up to `rgb`."""
        items = []
        for box in new_faces(found, hog_boxes, self.params.overlap):
            follower = self._start(sweep_rgb, box)
            if rgb is not sweep_rgb:  # the sweep ran on an older frame: one step to where the face is now
                box, quality = follower.update(rgb)
                if quality < self.params.min_quality:
                    continue
            items.append(_Followed(follower, box, now))
        self.items = items

    def step(self, rgb: np.ndarray, hog_boxes: Sequence[Box], now: float) -> list[Box]:
        """Follow each face into this frame; drop those HOG now finds, lost ones and expired ones. Their boxes."""
        kept = []
        for item in self.items:
            if now - item.born > self.params.follow_s:
                continue
            box, quality = item.follower.update(rgb)
            if quality < self.params.min_quality or any(iou(box, h) >= self.params.overlap for h in hog_boxes):
                continue
            item.box = box
            kept.append(item)
        self.items = kept
        return [item.box for item in kept]


class Sweeper(Protocol):
    """Runs a sweep of one frame; the result arrives as a Future of boxes in that frame's pixels. `budget`, when
    not None, is acquired by the station before `submit` and released by the sweeper when the sweep is done."""

    budget: Optional[SweepBudget]

    def submit(self, rgb: np.ndarray) -> "Future[list[Box]]": ...


class InlineSweeper:
    """Sweeps in the calling thread (facemon-replay, tests): the result is ready when `submit` returns."""

    def __init__(self, engine, params: SweepParams) -> None:
        self.engine = engine
        self.params = params
        self.budget: Optional[SweepBudget] = None  # replay runs on clip time: the cadence alone paces sweeps

    def submit(self, rgb: np.ndarray) -> "Future[list[Box]]":
        future: "Future[list[Box]]" = Future()
        future.set_result(self.engine.sweep(rgb, self.params.scale, self.params.cnn_upsample, self.params.hog_upsample))
        return future


_sweep_engine = None  # per sweep process only; set by _init_sweeper, never in the parent


def _init_sweeper(nice: int, parent_pid: int, use_pdeathsig: bool) -> None:
    global _sweep_engine
    from recognizer.vision.detect import Detectors
    from recognizer.vision.encoders import exit_with_parent

    exit_with_parent(parent_pid, use_pdeathsig)  # a killed recognizer leaves no sweep process behind
    os.nice(nice)
    _sweep_engine = Detectors()  # the two detectors only: no landmark or descriptor models in this process


def _sweep_in_process(rgb: np.ndarray, scale: float, cnn_up: int, hog_up: int) -> tuple[list[Box], float]:
    """The sweep's boxes and the CPU seconds it cost (what the budget charges)."""
    start = time.process_time()
    boxes = _sweep_engine.sweep(rgb, scale, cnn_up, hog_up)
    return boxes, time.process_time() - start


class ProcessSweeper:
    """One process, shared by every station, that runs sweeps off the stations' frame paths.

    dlib's CNN holds the GIL for its whole run, so in a thread it would stall every station; in its own
    process, at a lower priority (`nice`), it costs the stations at most the CPU share `SweepBudget` allows,
    and less when they keep the CPU busy.
    """

    def __init__(self, params: SweepParams) -> None:
        self.params = params
        self.budget = SweepBudget(params.budget)
        # spawn: never fork a process that holds threads and sockets
        # PDEATHSIG fires when the *thread* that started the process ends: only arm it from the main thread
        self._pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"), initializer=_init_sweeper,
                                         initargs=(params.nice, os.getpid(),
                                                   threading.current_thread() is threading.main_thread()))
        self._pool.submit(_sweep_in_process, np.zeros((120, 160, 3), np.uint8), 1.0, 0, 0).result()  # load now
        log.info("sweep process ready: CNN sweeps every %.1f s (%.1f s when HOG sees nobody), at most %.0f%% of a core",
                 params.period_s, params.idle_period_s, params.budget * 100)

    def submit(self, rgb: np.ndarray) -> "Future[list[Box]]":
        p = self.params
        inner = self._pool.submit(_sweep_in_process, rgb, p.scale, p.cnn_upsample, p.hog_upsample)
        outer: "Future[list[Box]]" = Future()
        started = time.monotonic()

        def done(f: Future) -> None:
            try:
                boxes, cpu_s = f.result()
            except BaseException as exc:  # noqa: BLE001 - handed to the station, which logs it
                self.budget.release(started, time.monotonic() - started)
                outer.set_exception(exc)
                return
            self.budget.release(started, cpu_s)
            outer.set_result(boxes)

        inner.add_done_callback(done)
        return outer

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


class StationSweep:
    """One station's sweeps: schedules them, collects results without waiting, and follows what they found.

    `step` is called once per frame by the pipeline with HOG's boxes; it returns extra boxes (followers) for
    the tracker. With a `ProcessSweeper` a sweep's result is used on the first frame after it is ready
    (latest frame wins: a station never has more than one sweep outstanding); with an `InlineSweeper` it is
    used on the frame it was taken from, so a replay is repeatable.
    """

    def __init__(self, sweeper: Sweeper, params: SweepParams, start: FollowerFactory) -> None:
        self.sweeper = sweeper
        self.params = params
        self.schedule = SweepSchedule(params)
        self.followers = FollowerSet(params, start)
        self._pending: Optional[tuple[Future, np.ndarray, float]] = None
        self.sweeps = 0

    def step(self, rgb: "np.ndarray | Callable[[], np.ndarray]", hog_boxes: Sequence[Box], now: float,
             lost: bool) -> list[Box]:
        """`rgb`: the frame, or a function that gives it (called only when a follower or a sweep needs the frame's
        colours: most frames need none, and the pipeline decodes them in grey)."""
        frame = rgb if callable(rgb) else (lambda: rgb)
        extra = self.followers.step(frame(), hog_boxes, now) if self.followers.items else []
        extra = self._collect(frame, hog_boxes, now, extra)
        if self._pending is None and self.schedule.due(now, len(hog_boxes) + len(extra), lost):
            self._start(frame, now)
            extra = self._collect(frame, hog_boxes, now, extra)  # an inline sweep is ready at once
        return extra

    def _start(self, frame: Callable[[], np.ndarray], now: float) -> None:
        budget = self.sweeper.budget  # the sweeper releases it when its sweep is done
        if budget is not None and not budget.try_acquire(time.monotonic()):
            return  # (before the frame is asked for: while the budget is spent, frames are not decoded for it)
        rgb = frame()
        try:
            future = self.sweeper.submit(rgb)
        except Exception:  # the sweep process is gone (shutting down): the per-frame path goes on without it
            log.exception("could not start a detection sweep")
            if budget is not None:
                budget.release(time.monotonic(), 0.0)
            return
        self.schedule.started(now)
        self.sweeps += 1
        self._pending = (future, rgb, now)

    def _collect(self, frame: Callable[[], np.ndarray], hog_boxes: Sequence[Box], now: float,
                 extra: list[Box]) -> list[Box]:
        """Use the outstanding sweep's faces if it is done; the follower boxes for this frame."""
        if self._pending is None or not self._pending[0].done():
            return extra
        future, sweep_rgb, taken = self._pending
        self._pending = None
        if now - taken > self.params.follow_s:  # a busy CPU starved the sweep: its faces have moved on
            log.debug("sweep result %.1f s old: dropped", now - taken)
            return extra
        try:
            found = future.result()
        except Exception:  # a failed sweep must not stop the station: log it, the next one may work
            log.exception("detection sweep failed")
            return extra
        self.followers.replace(found, hog_boxes, sweep_rgb, frame(), now)
        log.debug("sweep: %d faces, %d not seen by HOG", len(found), len(self.followers.items))
        return [item.box for item in self.followers.items]


def correlation_follower(rgb: np.ndarray, box: Box) -> Follower:
    """A dlib correlation tracker started on `box` in `rgb` (~4 ms per update on a 640x360 frame)."""
    import dlib

    return _DlibFollower(dlib, rgb, box)


class _DlibFollower:
    def __init__(self, dlib, rgb: np.ndarray, box: Box) -> None:
        top, right, bottom, left = box
        self._h, self._w = rgb.shape[:2]
        self._tracker = dlib.correlation_tracker()
        self._tracker.start_track(np.ascontiguousarray(rgb), dlib.rectangle(int(left), int(top), int(right), int(bottom)))

    def update(self, rgb: np.ndarray) -> tuple[Box, float]:
        quality = float(self._tracker.update(np.ascontiguousarray(rgb)))
        r = self._tracker.get_position()
        box = (max(int(round(r.top())), 0), min(int(round(r.right())), self._w),
               min(int(round(r.bottom())), self._h), max(int(round(r.left())), 0))
        return box, quality
