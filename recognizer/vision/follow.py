"""Following a face by its 68 landmarks between HOG searches.

With liveness on, dlib's 68 landmarks of every face are computed on every frame anyway (~2.5 ms a face); HOG on a
crop around the face costs ~3.5 ms more. Between two HOG searches a face's box can come from its landmarks
instead: the landmarks are fitted on this frame starting from the face's box on the last frame, and the box is
put back around them where HOG put it, relative to the landmarks' centre and size (the *anchor*, taken on the
last frame HOG found the face). The same landmarks then serve liveness, so a followed frame costs one landmark fit
and no HOG.

A landmark fit always returns 68 points, face or not, so a followed box is only accepted when it stays plausible:
its centre moved at most `max_shift` of its side since the last frame, its side changed by at most `max_scale`,
and the grey picture in it still correlates with the face HOG last found there (`min_look`; a person's own frames
0.64-1.0, another person or the empty seat far below). Otherwise, and at the latest `search_every` frames after
HOG last found the face, HOG searches around it again: a face that left is dropped by the tracker as before,
at most `search_every - 1` frames later (tests/test_follow.py, on real frames with the face cut out).

Pure geometry and bookkeeping here; the landmark model and the looks are computed by the caller.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from shared.results import Box

INNER = slice(17, 68)  # brows, eyes, nose, mouth: the jaw line moves with a turned head, these hold their shape


@dataclass(frozen=True)
class FollowParams:
    """When a face's box may come from its landmarks instead of a HOG search (`search_every` is
    `RegionParams.search_every`). `max_shift`: most the box centre may move between two frames, in box sides;
    `max_scale`: most its side may grow or shrink by, as a factor; `min_look`: least correlation of the face's
    look (8x8 grey) with its look when HOG last found it."""

    max_shift: float = 0.25
    max_scale: float = 1.15
    min_look: float = 0.6

    def __post_init__(self) -> None:
        if not 0.0 < self.max_shift <= 1.0:
            raise ValueError(f"max_shift must be in (0, 1] box sides, got {self.max_shift}")
        if not 1.0 < self.max_scale <= 2.0:
            raise ValueError(f"max_scale must be in (1, 2], got {self.max_scale}")
        if not -1.0 <= self.min_look <= 1.0:
            raise ValueError(f"min_look must be a correlation in [-1, 1], got {self.min_look}")


def landmark_frame(points: np.ndarray) -> tuple[float, float, float]:
    """(x, y) centre and size (RMS distance to the centre) of the inner 51 of dlib's 68 landmarks."""
    inner = np.asarray(points, np.float64)[INNER]
    cx, cy = inner.mean(axis=0)
    size = float(np.sqrt(((inner - (cx, cy)) ** 2).sum(axis=1).mean()))
    return float(cx), float(cy), max(size, 1e-3)


@dataclass(frozen=True)
class Anchor:
    """Where HOG put a face's box relative to its landmarks (`offsets`: top, right, bottom, left from the
    landmarks' centre, in landmark sizes), the face's look then, and the frame."""

    offsets: tuple[float, float, float, float]
    look: Optional[np.ndarray]
    frame: int

    @classmethod
    def of(cls, box: Box, points: np.ndarray, look: Optional[np.ndarray], frame: int) -> "Anchor":
        cx, cy, s = landmark_frame(points)
        top, right, bottom, left = box
        return cls(((top - cy) / s, (right - cx) / s, (bottom - cy) / s, (left - cx) / s), look, frame)

    def box(self, points: np.ndarray, height: int, width: int) -> Box:
        """The box around `points` where HOG would have put it, clamped to the frame."""
        cx, cy, s = landmark_frame(points)
        top, right, bottom, left = self.offsets
        return (max(0, int(round(cy + top * s))), min(width, int(round(cx + right * s))),
                min(height, int(round(cy + bottom * s))), max(0, int(round(cx + left * s))))


def _side(box: Box) -> int:
    return max(box[2] - box[0], box[1] - box[3], 1)


def plausible(before: Box, after: Box, params: FollowParams) -> bool:
    """Whether a followed box moved and changed size little enough since the last frame."""
    ratio = _side(after) / _side(before)
    if not 1 / params.max_scale <= ratio <= params.max_scale:
        return False
    shift = np.hypot((after[0] + after[2] - before[0] - before[2]) / 2, (after[1] + after[3] - before[1] - before[3]) / 2)
    return bool(shift <= params.max_shift * _side(before))


class LandmarkFollower:
    """One station's anchors, by track id. Not thread-safe. `search_every`: frames between HOG searches of a
    followed face (at least 2: 1 means never followed)."""

    def __init__(self, search_every: int, params: FollowParams = FollowParams()) -> None:
        if search_every < 2:
            raise ValueError(f"search_every must be at least 2 to follow faces, got {search_every}")
        self.search_every = search_every
        self.params = params
        self._anchors: dict[int, Anchor] = {}
        self.followed = 0  # boxes given by landmarks
        self.refused = 0  # fits refused as implausible (HOG searched instead)

    def anchor(self, track_id: int, box: Box, points: np.ndarray, look: Optional[np.ndarray], frame: int) -> None:
        """HOG found track `track_id` at `box` on `frame`, where its landmarks are `points`."""
        self._anchors[track_id] = Anchor.of(box, points, look, frame)

    def may_follow(self, track_id: int, frame: int) -> bool:
        """Whether the track's box on `frame` may come from its landmarks (HOG found it less than `search_every`
        frames ago)."""
        anchor = self._anchors.get(track_id)
        return anchor is not None and 0 < frame - anchor.frame < self.search_every

    def follow(self, track_id: int, before: Box, points: np.ndarray, look_of, height: int, width: int) -> Optional[Box]:
        """The track's box on this frame from its landmarks `points` (fitted from `before`, its last box), or None
        when that box is implausible (HOG must search). `look_of(box)`: the face's look in a box, or None."""
        anchor = self._anchors[track_id]
        after = anchor.box(points, height, width)
        ok = after[2] > after[0] and after[1] > after[3] and plausible(before, after, self.params)
        if ok and anchor.look is not None:
            look = look_of(after)
            ok = look is not None and float(look @ anchor.look) >= self.params.min_look
        if not ok:
            self.refused += 1
            return None
        self.followed += 1
        return after

    def forget(self, track_id: int) -> None:
        self._anchors.pop(track_id, None)
