"""Detection where faces can be: a full-frame pass now and then, HOG on a crop around each followed face between.

HOG on a whole 640x480 frame costs ~25 ms of a core, three quarters of a frame's work, although the tracker knows
where every face was one frame ago. So between full passes the detector runs only on a crop around each track
(the box grown by `margin` of its side on every side), scaled so the face is about `face_px` pixels: dlib's HOG
window is 80 px, and a bigger face only costs more pyramid levels. A crop search costs ~2-4 ms.

Where something moved outside the tracks since the last full pass (compared on a grey thumbnail reduced
`cell_px` times), that area is searched too, at full scale: this is how a face entering the view is boxed on the
frame it enters (the "new face, first box within 2 frames" rule, tests/test_regions.py), while hands and papers
moving on a desk cost only the area they cover.

A full-frame pass runs:

- every `full_every` frames (the reference for motion is renewed; a face that appeared without moving, e.g. a
  seated person turning to the camera, is found). While the scene stays as it is (a periodic pass found exactly
  the faces already followed, nothing was lost and no new face came from a moving area) the interval doubles
  after each such pass, up to `full_every_max` frames (40: ~1.3 s at 30 fps); anything else brings it back to
  `full_every`. One seated candidate is the common desk: its full passes were ~3 ms of a frame's ~15, now ~1;
- when a track was missed on the last frame (the tracker lost confidence in it);
- when the crops and the moving area would cover more than `max_share` of the frame (as dear as the frame).

With no track and nothing moving, frames between full passes are not searched at all: the desk is empty and
stays so. Faces turned away from HOG are still found by the CNN sweeps (recognizer.vision.sweep), on whole frames.

Pure planning over boxes and thumbnails here; the detectors are passed in as callables.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import cv2
import numpy as np

from recognizer.settings import check_value
from recognizer.vision.track import iou
from shared.results import Box

log = logging.getLogger(__name__)

Detect = Callable[[np.ndarray], list]  # an RGB image -> boxes in its pixels


@dataclass(frozen=True)
class RegionParams:
    """How the per-frame detector looks only where faces can be.

    `full_every`: frames between full-frame passes while every face is followed (1: every frame, the old
    behaviour); `full_every_max`: the longest that interval grows while the scene stays the same; `margin`: a
    crop is the track's box grown by this share of its side on each side (how far a face may move between two
    frames); `face_px`: crops are scaled down so the followed face is about this many pixels
    (HOG's window is 80 px; never scaled up); `max_share`: crops covering more of the frame than this call a full
    pass instead; `cell_px`, `motion_level`, `motion_cells`: the motion test, on a grey thumbnail reduced
    `cell_px` times: that many cells outside the tracks whose mean changed by `motion_level` grey levels since the
    last full pass call a full pass; `search_every`: with liveness on, a face HOG found is followed by its 68
    landmarks (computed for liveness anyway) and HOG searches around it only every `search_every` frames, or
    sooner when the landmarks' box is implausible (recognizer.vision.follow; 1: HOG around every face every frame).
    """

    full_every: int = 10
    full_every_max: int = 40
    search_every: int = 3
    margin: float = 0.5
    face_px: int = 90
    max_share: float = 0.5
    cell_px: int = 8
    motion_level: int = 20
    motion_cells: int = 3

    def __post_init__(self) -> None:
        check_value("full_detect_every", self.full_every, "full_every")  # the bounds of --full-detect-every
        check_value("search_every", self.search_every, "search_every")  # the bounds of --search-every
        check_value("full_detect_every_max", self.full_every_max, "full_every_max")  # (under full_every: no growth)
        if not 0.2 <= self.margin <= 2.0:
            raise ValueError(f"margin must be 0.2..2 face sides, got {self.margin}")
        if not 80 <= self.face_px <= 400:
            raise ValueError(f"face_px must be 80..400 (HOG's window is 80 px), got {self.face_px}")
        if not 0.0 < self.max_share <= 1.0:
            raise ValueError(f"max_share must be in (0, 1], got {self.max_share}")
        if not 2 <= self.cell_px <= 32 or not 1 <= self.motion_level <= 255 or self.motion_cells < 1:
            raise ValueError("cell_px must be 2..32, motion_level 1..255 and motion_cells at least 1")

    @property
    def enabled(self) -> bool:
        return self.full_every > 1


@dataclass(frozen=True)
class Region:
    """A crop of the frame (pixel bounds, bottom/right exclusive) and the scale it is searched at."""

    top: int
    left: int
    bottom: int
    right: int
    scale: float

    @property
    def area(self) -> int:
        return max(0, self.bottom - self.top) * max(0, self.right - self.left)


def _side(box: Box) -> int:
    return max(box[2] - box[0], box[1] - box[3], 1)


def region_around(box: Box, height: int, width: int, params: RegionParams) -> Region:
    """The crop searched for the face last seen at `box`, clamped to the frame."""
    top, right, bottom, left = box
    side = _side(box)
    pad = int(round(side * params.margin))
    return Region(max(0, top - pad), max(0, left - pad), min(height, bottom + pad), min(width, right + pad),
                  min(1.0, params.face_px / side))


def covered_share(regions: Sequence[Region], height: int, width: int) -> float:
    """Share of the frame that the union of `regions` covers, 0..1."""
    if not regions:
        return 0.0
    mask = np.zeros((height, width), bool)
    for r in regions:
        mask[r.top : r.bottom, r.left : r.right] = True
    return float(mask.mean())


def motion_thumb(rgb: np.ndarray, cell_px: int) -> np.ndarray:
    """The frame (grey, or RGB's green channel) reduced `cell_px` times (each cell the mean of its block), int16."""
    h, w = rgb.shape[:2]
    small = cv2.resize(rgb, (max(1, w // cell_px), max(1, h // cell_px)), interpolation=cv2.INTER_AREA)
    return (small if small.ndim == 2 else small[:, :, 1]).astype(np.int16)


def motion_region(reference: np.ndarray, now: np.ndarray, masked: Sequence[Region], params: RegionParams,
                  height: int, width: int, scale: float = 1.0) -> Optional[Region]:
    """The area where at least `motion_cells` cells changed outside `masked`, grown so a face there fits a HOG
    window (>= 2 cells and 48 px on each side), searched at `scale`; None when nothing moved."""
    cell = params.cell_px
    changed = np.abs(now - reference) >= params.motion_level
    for r in masked:
        changed[r.top // cell : math.ceil(r.bottom / cell), r.left // cell : math.ceil(r.right / cell)] = False
    if int(changed.sum()) < params.motion_cells:
        return None
    ys, xs = np.nonzero(changed)
    pad = max(2 * cell, 48)
    return Region(max(0, int(ys.min()) * cell - pad), max(0, int(xs.min()) * cell - pad),
                  min(height, (int(ys.max()) + 1) * cell + pad), min(width, (int(xs.max()) + 1) * cell + pad), scale)


def detect_in(rgb: np.ndarray, region: Region, detect: Detect) -> list[Box]:
    """Faces `detect` finds in one region of `rgb`, as boxes of the whole frame."""
    crop = rgb[region.top : region.bottom, region.left : region.right]
    if region.scale < 1.0:
        crop = cv2.resize(crop, None, fx=region.scale, fy=region.scale, interpolation=cv2.INTER_AREA)
    else:
        crop = np.ascontiguousarray(crop)
    if min(crop.shape[:2]) < 40:  # nothing HOG could find (its window is 80 px)
        return []
    s = region.scale
    return [(int(round(t / s)) + region.top, int(round(r / s)) + region.left,
             int(round(b / s)) + region.top, int(round(l / s)) + region.left) for t, r, b, l in detect(crop)]


def same_faces(found: Sequence[Box], tracks: Sequence[Box], overlap: float = 0.3) -> bool:
    """Whether a full pass found exactly the faces already followed: as many boxes, each on a track's box."""
    return len(found) == len(tracks) and all(any(iou(b, t) >= overlap for t in tracks) for b in found)


def merge(boxes: Sequence[Box], overlap: float = 0.4) -> list[Box]:
    """Boxes with duplicates dropped (two crops that both saw one face): the first of overlapping ones is kept."""
    out: list[Box] = []
    for box in boxes:
        if all(iou(box, o) < overlap for o in out):
            out.append(box)
    return out


class RegionDetector:
    """One station's choice, frame by frame, between a full-frame pass and crops around its tracks. Not thread-safe."""

    def __init__(self, params: RegionParams = RegionParams()) -> None:
        self.params = params
        self._reference: Optional[np.ndarray] = None  # thumbnail of the last full pass
        self._reference_regions: list[Region] = []  # where faces were on it
        self._since_full = 0
        self._interval = params.full_every  # frames between periodic full passes now (grows while nothing changes)
        self.full_passes = 0
        self.crop_passes = 0
        self.motion_passes = 0  # crop passes that also searched an area that moved
        self.followed = 0  # faces whose box came from `follow` instead of a crop search
        self.last_reason = ""

    def _plan(self, thumb: np.ndarray, regions: list[Region], lost: bool, height: int, width: int,
              scale: float) -> tuple[str, list[Region]]:
        """Why a full pass is due ("" when none is) and, when none is, the regions to search."""
        p = self.params
        if self._reference is None or self._reference.shape != thumb.shape:
            return "first frame", []
        if lost:
            return "track lost", []
        if self._since_full + 1 >= self._interval:
            return "periodic", []
        moving = motion_region(self._reference, thumb, regions + self._reference_regions, p, height, width, scale)
        if moving is not None:
            regions = regions + [moving]
            self.motion_passes += 1
        if covered_share(regions, height, width) > p.max_share:
            return "motion over the frame" if moving is not None else "crops cover the frame", []
        return "", regions

    def detect(self, rgb: np.ndarray, tracks: Sequence[Box], lost: bool, full: Detect, crop: Detect,
               scale: float = 1.0, gray: Optional[np.ndarray] = None,
               follow: Optional[Callable[[int], Optional[Box]]] = None) -> list[Box]:
        """This frame's face boxes: `full(rgb)` when a full pass is due, else `crop` run on a region around each
        of `tracks` (the boxes the tracker holds) and on the area that moved (at `scale`, the full pass's), merged.
        `lost`: a track was missed on the last frame. `gray`: the frame in grey, when the caller has it: crops
        and the motion test use it (HOG on one channel costs ~25 % less than on three, boxes alike).
        `follow(i)`, when given and no full pass is due: the box of `tracks[i]` on this frame found another way
        (its landmarks), or None to search around it; a followed face's area is not searched (but still masks
        the motion test). Followed boxes come first."""
        h, w = rgb.shape[:2]
        image = rgb if gray is None else gray
        thumb = motion_thumb(image, self.params.cell_px)
        regions = [region_around(b, h, w, self.params) for b in tracks]
        reason, regions = self._plan(thumb, regions, lost, h, w, scale)
        self.last_reason = reason
        if reason:
            boxes = list(full(rgb))
            p = self.params
            stayed = reason == "periodic" and same_faces(boxes, tracks)
            self._interval = max(p.full_every, min(2 * self._interval, p.full_every_max)) if stayed else p.full_every
            self._reference = thumb
            self._reference_regions = regions + [region_around(b, h, w, self.params) for b in boxes]
            self._since_full = 0
            self.full_passes += 1
            return boxes
        self._since_full += 1
        self.crop_passes += 1
        followed: list[Box] = []
        found: list[Box] = []
        for i, region in enumerate(regions):
            box = follow(i) if follow is not None and i < len(tracks) else None
            if box is not None:
                followed.append(box)
            else:
                found.extend(detect_in(image, region, crop))
        self.followed += len(followed)
        boxes = merge(followed + sorted(found, key=lambda b: -_side(b)))
        if len(boxes) > len(tracks):  # a face came (from an area that moved): full passes at their shortest again
            self._interval = self.params.full_every
        elif len(regions) > len(tracks):  # an area moved and held no new face: it is the reference there from now
            self._absorb(thumb, regions[-1])
        return boxes

    def _absorb(self, thumb: np.ndarray, searched: Region) -> None:
        """Take `thumb`'s cells under `searched` into the motion reference: what changed there was searched and is
        no face, so it is not searched again on every frame until the next full pass (a shifted chair, a
        candidate's shoulders after they sat back) unless it changes again."""
        if self._reference is None:
            return
        cell = self.params.cell_px
        rows = slice(searched.top // cell, math.ceil(searched.bottom / cell))
        cols = slice(searched.left // cell, math.ceil(searched.right / cell))
        self._reference = self._reference.copy()
        self._reference[rows, cols] = thumb[rows, cols]

    @property
    def interval(self) -> int:
        """Frames between periodic full passes now: `full_every`, doubled by each pass that found nothing new."""
        return self._interval
