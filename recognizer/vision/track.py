"""Associating face boxes between frames, so a face is encoded when it appears, not on every frame.

Pure logic over `(top, right, bottom, left)` boxes: greedy matching by box overlap (IoU), with a
centre-distance fallback for faces that moved fast between two frames.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from shared.results import Box


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes, 0..1."""
    top, bottom = max(a[0], b[0]), min(a[2], b[2])
    left, right = max(a[3], b[3]), min(a[1], b[1])
    inter = max(0, bottom - top) * max(0, right - left)
    if inter == 0:
        return 0.0
    area = lambda x: max(0, x[2] - x[0]) * max(0, x[1] - x[3])  # noqa: E731
    return inter / float(area(a) + area(b) - inter)


def _centre_distance(a: Box, b: Box) -> float:
    """Distance between box centres in units of the larger box's size."""
    ay, ax = (a[0] + a[2]) / 2, (a[1] + a[3]) / 2
    by, bx = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
    size = max(a[2] - a[0], a[1] - a[3], b[2] - b[0], b[1] - b[3], 1)
    return ((ay - by) ** 2 + (ax - bx) ** 2) ** 0.5 / size


@dataclass(frozen=True)
class TrackerParams:
    """`min_iou`: overlap that links a box to a track (0..1); `max_centre_shift`: fallback link when the
    centre moved less than this many face sizes; `max_misses`: frames a track survives undetected."""

    min_iou: float = 0.3
    max_centre_shift: float = 0.5
    max_misses: int = 5

    def __post_init__(self) -> None:
        if not 0.0 < self.min_iou <= 1.0:
            raise ValueError(f"min_iou must be in (0, 1], got {self.min_iou}")
        if self.max_centre_shift < 0:
            raise ValueError(f"max_centre_shift must be >= 0, got {self.max_centre_shift}")
        if self.max_misses < 0:
            raise ValueError(f"max_misses must be >= 0, got {self.max_misses}")


@dataclass
class Track:
    """One face followed across frames."""

    id: int
    box: Box
    first_frame: int
    last_seen: int
    hits: int = 1
    misses: int = 0
    encoded_frame: int = -1  # frame of the last encoding; -1 = never encoded
    encoded_box: Box | None = None
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class TrackerUpdate:
    """What one frame did: the track of each detection (same order), and tracks that ended."""

    tracks: list[Track]
    new: list[int]
    ended: list[int]


class Tracker:
    """Links detections to tracks frame by frame. One per station; not thread-safe."""

    def __init__(self, params: TrackerParams = TrackerParams()) -> None:
        self.params = params
        self.tracks: dict[int, Track] = {}
        self.frame = -1
        self._next_id = 1

    def update(self, boxes: Sequence[Box]) -> TrackerUpdate:
        """Associate this frame's boxes with existing tracks; start new tracks, end stale ones."""
        self.frame += 1
        pairs = []
        for ti, track in self.tracks.items():
            for bi, box in enumerate(boxes):
                overlap = iou(track.box, box)
                if overlap >= self.params.min_iou:
                    pairs.append((2.0 + overlap, ti, bi))  # any real overlap beats the fallback
                else:
                    shift = _centre_distance(track.box, box)
                    if shift <= self.params.max_centre_shift:
                        pairs.append((1.0 - shift, ti, bi))
        assigned: dict[int, int] = {}
        used_tracks: set[int] = set()
        for _, ti, bi in sorted(pairs, reverse=True):
            if bi in assigned or ti in used_tracks:
                continue
            assigned[bi] = ti
            used_tracks.add(ti)
        result, new = [], []
        for bi, box in enumerate(boxes):
            if bi in assigned:
                track = self.tracks[assigned[bi]]
                track.box, track.last_seen, track.misses = box, self.frame, 0
                track.hits += 1
            else:
                track = Track(self._next_id, box, self.frame, self.frame)
                self._next_id += 1
                self.tracks[track.id] = track
                new.append(track.id)
            result.append(track)
        ended = []
        for ti in list(self.tracks):
            if ti not in used_tracks and ti not in new:
                track = self.tracks[ti]
                track.misses += 1
                if track.misses > self.params.max_misses:
                    ended.append(ti)
                    del self.tracks[ti]
        return TrackerUpdate(result, new, ended)
