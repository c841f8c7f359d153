"""Blink-based liveness per tracked face: eye aspect ratio and/or the eye-state CNN, pure state.

A face is *live* when it blinked within the last ``blink_timeout_s`` seconds; a face that has not
blinked for that long (``first_blink_timeout_s`` before its first blink) is reported as
``no_blink`` (a possible photo or replay). A closure too long to be a blink is ``eyes_closed``.

Nothing here touches a camera, a model file or a socket: ``FaceLiveness.update`` is fed the
landmarks and the grayscale frame that the pipeline already has, and the eye-state model (when the
``cnn`` method is used) is passed in, built once by the caller.
"""
from __future__ import annotations

import logging
import math
from collections import deque
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Deque, Dict, List, Optional, Tuple

import numpy as np

from recognizer.settings import LIVENESS_METHODS, check_section

if TYPE_CHECKING:  # the CNN is optional; importing it here would load nothing, but keep it lazy
    from recognizer.liveness.eyes import EyeStateModel

log = logging.getLogger(__name__)

METHODS = LIVENESS_METHODS  # the choices of --liveness-method
DEFAULT_METHOD = "both"  # EAR and CNN must agree: robust to tilted photos (docs/liveness.md)

# dlib 68-point layout: points 36-41 are the subject's right eye (image left), 42-47 the left eye.
RIGHT_EYE = slice(36, 42)
LEFT_EYE = slice(42, 48)


class LivenessState(str, Enum):
    """What liveness says about one tracked face."""

    UNKNOWN = "unknown"          # no blink yet, still inside first_blink_timeout_s
    LIVE = "live"                # blinked within the window
    NO_BLINK = "no_blink"        # no blink for the timeout: possible photo / replay
    EYES_CLOSED = "eyes_closed"  # eyes closed longer than long_closure_s (asleep, or looking down)


@dataclass(frozen=True)
class LivenessParams:
    """Timeouts (seconds) and blink bounds; validated at construction with a readable ValueError."""

    first_blink_timeout_s: float = 30.0   # grace before the first blink of a track (--first-blink-timeout)
    blink_timeout_s: float = 60.0         # after a blink, how long it stays "live" (--blink-timeout)
    # EAR: closed below baseline * ear_closed_ratio, re-opened above baseline * ear_reopen_ratio
    ear_closed_ratio: float = 0.75
    ear_reopen_ratio: float = 0.85
    # CNN: closed above cnn_closed_prob, re-opened below cnn_open_prob (probabilities of "closed")
    cnn_closed_prob: float = 0.5
    cnn_open_prob: float = 0.3
    min_blink_frames: int = 1             # closed frames needed for a blink
    max_blink_frames: int = 15            # more closed frames than this is not a blink
    max_blink_s: float = 0.7              # longer closures are not blinks (human blinks ~0.1-0.4 s)
    long_closure_s: float = 2.0           # closed this long -> EYES_CLOSED
    max_gap_s: float = 1.0                # a gap between samples this long drops an open closure
    baseline_window_s: float = 10.0       # open-eye baseline: recent samples over this window
    baseline_quantile: float = 0.8        # ... at this quantile (robust to blinks, squints)
    baseline_min_samples: int = 5         # no decision before this many baseline samples
    fuse_window_s: float = 0.5            # method "both": EAR and CNN blinks this close are one

    def __post_init__(self) -> None:
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise ValueError(f"LivenessParams: {message}")

        check_section(self, "liveness")  # first_blink_timeout_s, blink_timeout_s: their flags' bounds
        need(0 < self.ear_closed_ratio < self.ear_reopen_ratio <= 1,
             "need 0 < ear_closed_ratio < ear_reopen_ratio <= 1, got "
             f"{self.ear_closed_ratio} and {self.ear_reopen_ratio}")
        need(0 < self.cnn_open_prob < self.cnn_closed_prob < 1,
             f"need 0 < cnn_open_prob < cnn_closed_prob < 1, got {self.cnn_open_prob} and {self.cnn_closed_prob}")
        need(self.min_blink_frames >= 1, f"min_blink_frames must be >= 1, got {self.min_blink_frames}")
        need(self.max_blink_frames >= self.min_blink_frames,
             f"max_blink_frames ({self.max_blink_frames}) must be >= min_blink_frames ({self.min_blink_frames})")
        need(self.max_blink_s > 0, f"max_blink_s must be > 0 s, got {self.max_blink_s}")
        need(self.long_closure_s > self.max_blink_s,
             f"long_closure_s ({self.long_closure_s}) must be > max_blink_s ({self.max_blink_s})")
        need(self.max_gap_s > 0, f"max_gap_s must be > 0 s, got {self.max_gap_s}")
        need(self.baseline_window_s > 0, f"baseline_window_s must be > 0 s, got {self.baseline_window_s}")
        need(0 < self.baseline_quantile <= 1, f"baseline_quantile must be in (0, 1], got {self.baseline_quantile}")
        need(self.baseline_min_samples >= 1, f"baseline_min_samples must be >= 1, got {self.baseline_min_samples}")
        need(self.fuse_window_s >= 0, f"fuse_window_s must be >= 0 s, got {self.fuse_window_s}")


@dataclass(frozen=True)
class LivenessResult:
    """Liveness of one face on one frame; ear and closed_prob are None when not computed."""

    state: LivenessState
    ear: Optional[float]
    closed_prob: Optional[float]
    blinks: int
    seconds_since_blink: Optional[float]


def eye_aspect_ratio(eye: np.ndarray) -> float:
    """Soukupová-Čech EAR of 6 eye points (dlib order): ~0.3 open, ~0.15 closed; scale-free."""
    p = np.asarray(eye, dtype=np.float64)
    if p.shape != (6, 2):
        raise ValueError(f"eye_aspect_ratio needs 6 (x, y) points, got shape {p.shape}")
    width = float(np.linalg.norm(p[0] - p[3]))
    if not math.isfinite(width) or width <= 1e-6:
        raise ValueError("eye_aspect_ratio: eye corners coincide (degenerate landmarks)")
    height = float(np.linalg.norm(p[1] - p[5]) + np.linalg.norm(p[2] - p[4]))
    return height / (2.0 * width)


def face_ear(landmarks68: np.ndarray) -> float:
    """Mean EAR of both eyes from dlib's 68 landmarks (x, y)."""
    pts = _check_landmarks(landmarks68)
    return 0.5 * (eye_aspect_ratio(pts[RIGHT_EYE]) + eye_aspect_ratio(pts[LEFT_EYE]))


def _check_landmarks(landmarks68: np.ndarray) -> np.ndarray:
    pts = np.asarray(landmarks68, dtype=np.float64)
    if pts.shape != (68, 2):
        raise ValueError(f"need dlib's 68 landmarks as a (68, 2) array, got shape {pts.shape}")
    return pts


@dataclass(frozen=True)
class BlinkEvent:
    """One closure of the eyes: start/end times (s), closed frames, and whether it was a blink."""

    start_t: float
    end_t: float
    frames: int
    is_blink: bool


class BlinkDetector:
    """Closure state machine over an *openness* signal (EAR, or 1 - P(closed)); pure, one per track.

    With ``adaptive`` the thresholds are ``closed_ratio`` / ``reopen_ratio`` times an open-eye
    baseline (a high quantile of recent samples taken while the eyes were open); otherwise they
    are the ratios themselves (openness already calibrated, e.g. 1 - CNN probability).
    A closure that re-opens within ``max_blink_frames`` frames and ``max_blink_s`` is a blink;
    one lasting ``long_closure_s`` or more is a long closure.
    """

    def __init__(self, params: LivenessParams, closed_ratio: float, reopen_ratio: float, adaptive: bool) -> None:
        self.p = params
        self.closed_ratio = closed_ratio
        self.reopen_ratio = reopen_ratio
        self.adaptive = adaptive
        self._base: Deque[Tuple[float, float]] = deque()
        self._last_t: Optional[float] = None
        self._closed_since: Optional[float] = None
        self._closed_frames = 0
        self.blinks = 0
        self.events: List[BlinkEvent] = []

    @classmethod
    def for_ear(cls, params: LivenessParams) -> "BlinkDetector":
        """Detector on EAR with a per-track adaptive baseline."""
        return cls(params, params.ear_closed_ratio, params.ear_reopen_ratio, adaptive=True)

    @classmethod
    def for_cnn(cls, params: LivenessParams) -> "BlinkDetector":
        """Detector on 1 - P(closed) with fixed probability thresholds."""
        return cls(params, 1.0 - params.cnn_closed_prob, 1.0 - params.cnn_open_prob, adaptive=False)

    @property
    def baseline(self) -> Optional[float]:
        """Open-eye openness baseline, or None while there are too few samples."""
        if not self.adaptive:
            return 1.0
        if len(self._base) < self.p.baseline_min_samples:
            return None
        return float(np.quantile([v for _, v in self._base], self.p.baseline_quantile))

    @property
    def closed(self) -> bool:
        """Whether the eyes are closed now."""
        return self._closed_since is not None

    def closed_for(self, t: float) -> float:
        """Seconds the eyes have been closed at time t (0 when open)."""
        return 0.0 if self._closed_since is None else max(0.0, t - self._closed_since)

    def long_closure(self, t: float) -> bool:
        """Whether the current closure has lasted long_closure_s or more at time t."""
        return self.closed_for(t) >= self.p.long_closure_s

    def update(self, t: float, openness: float) -> Optional[BlinkEvent]:
        """Feed one sample (t in s, monotonic); return the closure that ended on it, if any."""
        if not math.isfinite(openness) or not math.isfinite(t):
            return None
        if self._last_t is not None:
            if t < self._last_t:
                raise ValueError(f"time went backwards: {t} < {self._last_t}")
            if t - self._last_t > self.p.max_gap_s and self._closed_since is not None:
                log.debug("gap of %.2f s: closure dropped", t - self._last_t)
                self._closed_since, self._closed_frames = None, 0
        self._last_t = t
        base = self.baseline
        if base is None:  # still learning the open-eye baseline
            self._add_baseline(t, openness)
            return None
        event = None
        if self._closed_since is None:
            if openness < base * self.closed_ratio:
                self._closed_since, self._closed_frames = t, 1
            else:
                self._add_baseline(t, openness)
        elif openness > base * self.reopen_ratio:
            event = self._end_closure(t)
            self._add_baseline(t, openness)
        else:
            self._closed_frames += 1
        return event

    def _end_closure(self, t: float) -> BlinkEvent:
        assert self._closed_since is not None
        duration = t - self._closed_since
        is_blink = (self.p.min_blink_frames <= self._closed_frames <= self.p.max_blink_frames
                    and duration <= self.p.max_blink_s)
        event = BlinkEvent(self._closed_since, t, self._closed_frames, is_blink)
        self._closed_since, self._closed_frames = None, 0
        if is_blink:
            self.blinks += 1
        self.events.append(event)
        del self.events[:-16]  # keep a short history only
        return event

    def _add_baseline(self, t: float, openness: float) -> None:
        if not self.adaptive:
            return
        self._base.append((t, openness))
        while self._base and t - self._base[0][0] > self.p.baseline_window_s:
            self._base.popleft()
        while len(self._base) > 1000:  # bound memory at very high frame rates
            self._base.popleft()


class _Track:
    """Per-track liveness state."""

    def __init__(self, t: float, params: LivenessParams, method: str) -> None:
        self.first_t = t
        self.last_blink_t: Optional[float] = None
        self.blinks = 0
        self.ear = BlinkDetector.for_ear(params) if method in ("ear", "both") else None
        self.cnn = BlinkDetector.for_cnn(params) if method in ("cnn", "both") else None
        self.pending: Dict[str, float] = {}  # method "both": blink end time per detector, awaiting the other


class FaceLiveness:
    """Liveness of every tracked face of one station; call update() once per face per frame.

    ``method``: "ear" (landmarks only, ~0.05 ms/face), "cnn" (eye-state CNN, ~0.25 ms/face) or
    "both" (default: a blink counts when both saw it within fuse_window_s, ~0.45 ms/face). Without
    ``eye_model`` the CNN methods load the shipped recognizer/models/eye_state.json.
    """

    def __init__(self, params: LivenessParams, eye_model: "Optional[EyeStateModel]" = None,
                 method: str = DEFAULT_METHOD) -> None:
        if method not in METHODS:
            raise ValueError(f"liveness method must be one of {', '.join(METHODS)}; got {method!r}")
        if method in ("cnn", "both") and eye_model is None:
            from recognizer.liveness.eyes import EyeStateModel  # numpy weights, ~140 kB, a few ms

            eye_model = EyeStateModel.load()
        self.params = params
        self.eye_model = eye_model
        self.method = method
        self._tracks: Dict[int, _Track] = {}

    def update(self, track_id: int, t: float, landmarks68: np.ndarray, gray: np.ndarray) -> LivenessResult:
        """Feed one face (68 landmarks in `gray`'s pixels, t in monotonic seconds); return its state."""
        pts = _check_landmarks(landmarks68)
        track = self._tracks.get(track_id)
        if track is None:
            track = self._tracks[track_id] = _Track(t, self.params, self.method)
        ear: Optional[float] = None
        closed_prob: Optional[float] = None
        blinked_now: List[str] = []
        if track.ear is not None:
            try:
                ear = face_ear(pts)
            except ValueError:
                log.debug("track %s: degenerate eye landmarks", track_id)
            else:
                ev = track.ear.update(t, ear)
                if ev is not None and ev.is_blink:
                    blinked_now.append("ear")
        if track.cnn is not None:
            from recognizer.liveness.eyes import extract_eye_patches  # numpy + cv2 only

            assert self.eye_model is not None
            closed_prob = float(np.mean(self.eye_model.predict_closed(extract_eye_patches(gray, pts))))
            ev = track.cnn.update(t, 1.0 - closed_prob)
            if ev is not None and ev.is_blink:
                blinked_now.append("cnn")
        self._count_blinks(track, t, blinked_now)
        return LivenessResult(self._state(track, t), ear, closed_prob, track.blinks,
                              None if track.last_blink_t is None else t - track.last_blink_t)

    def _count_blinks(self, track: _Track, t: float, blinked_now: List[str]) -> None:
        if self.method != "both":
            if blinked_now:
                track.blinks += 1
                track.last_blink_t = t
            return
        # both: a blink counts when the two detectors agree within fuse_window_s
        for name in blinked_now:
            track.pending[name] = t
        track.pending = {k: v for k, v in track.pending.items() if t - v <= self.params.fuse_window_s}
        if len(track.pending) == 2:
            track.blinks += 1
            track.last_blink_t = t
            track.pending.clear()

    def _state(self, track: _Track, t: float) -> LivenessState:
        detectors = [d for d in (track.ear, track.cnn) if d is not None]
        if all(d.long_closure(t) for d in detectors):  # "both": both must agree
            return LivenessState.EYES_CLOSED
        if track.last_blink_t is not None:
            if t - track.last_blink_t <= self.params.blink_timeout_s:
                return LivenessState.LIVE
            return LivenessState.NO_BLINK
        if t - track.first_t > self.params.first_blink_timeout_s:
            return LivenessState.NO_BLINK
        return LivenessState.UNKNOWN

    def forget(self, track_id: int) -> None:
        """Drop a track's state (the tracker lost it); unknown ids are ignored."""
        self._tracks.pop(track_id, None)

    def __len__(self) -> int:
        return len(self._tracks)
