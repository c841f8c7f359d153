"""Face detection, landmarks and 128-D encodings with dlib, over plain numpy arrays.

Boxes are `(top, right, bottom, left)` pixel tuples (face_recognition's convention); dlib's own
types never leave this module. Images are RGB uint8 (convert with `cv2.cvtColor`, not slicing).
"""
from __future__ import annotations

import logging
import os
import queue
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from recognizer import settings
from recognizer.vision.dlib_models import CNN_DETECTOR, FACE_DESCRIPTOR, FACE_LANDMARKS_5, FACE_LANDMARKS_68, model_path
from recognizer.vision.track import iou
from shared.results import Box

log = logging.getLogger(__name__)

# hog+cnn: HOG every frame, CNN sweeps (recognizer.vision.sweep); the choices of --detector
DETECTORS = settings.DETECTORS
CHIP_SIZE = 150  # dlib's face descriptor takes 150x150 aligned chips
# dlib's CNN fails on images under 48 px a side (a RuntimeError, or a bus error that kills the process): such an
# image has no face it could find, so it is never given one
MIN_CNN_SIDE = 48


@dataclass(frozen=True)
class EngineConfig:
    """How faces are found. `upsample` doubles the image that many times before detecting
    (finds smaller faces, ~4x slower per step)."""

    detector: str = "hog+cnn"  # HOG per frame; CNN sweeps only where the caller runs them (--detector)
    upsample: int = 0

    def __post_init__(self) -> None:
        settings.check_section(self, "engine")  # detector, upsample: their flags' choices and bounds


@dataclass(frozen=True)
class Detection:
    """One detected face: its box (clamped to the image), the detector's score, and whether the
    detector's own rectangle reached the image border (the face is probably cut by the frame edge).

    Scores: HOG's SVM margin (0 is dlib's default threshold; clear frontal faces score ~1-3, faint
    false ones in dark backgrounds ~0-0.3); the CNN's confidence is on a similar scale.
    """

    box: Box
    score: float
    at_edge: bool

    @property
    def size(self) -> int:
        """The box's shorter side in pixels."""
        top, right, bottom, left = self.box
        return min(bottom - top, right - left)


def _at_edge(rect, height: int, width: int) -> bool:
    return rect.left() <= 0 or rect.top() <= 0 or rect.right() >= width - 1 or rect.bottom() >= height - 1


def _to_box(rect, height: int, width: int) -> Box:
    return (max(rect.top(), 0), min(rect.right(), width), min(rect.bottom(), height), max(rect.left(), 0))


def _largest_first(boxes: list[Box]) -> list[Box]:
    return sorted(boxes, key=lambda b: -(b[2] - b[0]) * (b[1] - b[3]))


class _Lease:
    """A free list of non-thread-safe dlib objects: each caller borrows its own, at most `limit` made (default:
    one per CPU core the process may use); a caller beyond that waits for one to come back.

    dlib's HOG detector keeps per-call scratch state (calling one from two threads crashed the
    process), but it releases the GIL, so a detector per concurrent caller gives real parallelism; more
    detectors than cores would add none, and each costs ~0.7 s of CPU to build (paid on some station's frame).
    """

    def __init__(self, factory, limit: int = 0) -> None:
        self._factory = factory
        self.limit = limit or max(1, len(os.sched_getaffinity(0)))
        self._free: "queue.SimpleQueue" = queue.SimpleQueue()
        self._made = 0
        self._lock = threading.Lock()

    def fill(self) -> None:
        """Make every object now (at start, not on some station's frame)."""
        with self._lock:
            missing, self._made = self.limit - self._made, self.limit
        for _ in range(missing):
            self._free.put(self._factory())

    @contextmanager
    def borrow(self):
        try:
            obj = self._free.get_nowait()
        except queue.Empty:
            with self._lock:
                make = self._made < self.limit
                self._made += make
            obj = self._factory() if make else self._free.get()
        try:
            yield obj
        finally:
            self._free.put(obj)


class Detectors:
    """dlib's two face detectors by name, and the sweep that combines them; nothing else is loaded.

    What a sweep process needs (`recognizer.vision.sweep`), without the landmark and descriptor models.
    Thread-safe like `FaceEngine`. `hog`, `cnn`: an engine's own, shared; None: made here (the CNN when
    `load_cnn`, else on first use).
    """

    def __init__(self, hog: "_Lease | None" = None, cnn=None, cnn_lock: "threading.Lock | None" = None,
                 load_cnn: bool = True) -> None:
        import dlib

        self._dlib = dlib
        self._hog = hog if hog is not None else _Lease(dlib.get_frontal_face_detector)
        self._cnn = cnn
        self._cnn_lock = cnn_lock if cnn_lock is not None else threading.Lock()
        if self._cnn is None and load_cnn:
            self._cnn = dlib.cnn_face_detection_model_v1(str(model_path(CNN_DETECTOR)))

    def detect_cnn(self, rgb: np.ndarray, upsample: int = 0) -> list[Box]:
        """Face boxes found by dlib's CNN (MMOD) detector in a uint8 RGB image, largest first.

        Finds faces turned up to ~60 degrees and partly lit, from ~80 px at upsample 0 (~40 px at 1); costs
        ~1.5 s of one core per 640x360 frame at upsample 0 on a small CPU, and holds the GIL meanwhile.
        """
        h, w = rgb.shape[:2]
        if min(h, w) < MIN_CNN_SIDE:
            return []
        with self._cnn_lock:
            if self._cnn is None:  # a HOG engine asked for a CNN detection (benchmarks): load it once
                self._cnn = self._dlib.cnn_face_detection_model_v1(str(model_path(CNN_DETECTOR)))
            rects = [d.rect for d in self._cnn(rgb, upsample)]
        return _largest_first([_to_box(r, h, w) for r in rects])

    def detect_hog(self, rgb: np.ndarray, upsample: int = 0) -> list[Box]:
        """Face boxes found by dlib's HOG detector in a uint8 RGB or gray image, largest first."""
        h, w = rgb.shape[:2]
        with self._hog.borrow() as hog:
            rects = list(hog(rgb, upsample))
        return _largest_first([_to_box(r, h, w) for r in rects])

    def sweep(self, rgb: np.ndarray, scale: float = 1.0, cnn_upsample: int = 0, hog_upsample: int = 1) -> list[Box]:
        """A thorough look at one frame: the CNN's faces, plus the faces HOG finds upsampled that the CNN
        missed (small frontal ones, ~40 px at upsample 1), on the frame resized by `scale`; boxes in `rgb`'s
        pixels, largest first. Costs about one CNN run (~10% more for HOG)."""
        import cv2

        small = rgb if scale >= 1.0 else cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        found = self.detect_cnn(small, cnn_upsample)
        for box in self.detect_hog(small, hog_upsample):
            if all(iou(box, b) < 0.3 for b in found):
                found.append(box)
        if scale < 1.0:
            found = [tuple(int(round(v / scale)) for v in b) for b in found]
        return _largest_first(found)


class FaceEngine:
    """dlib's detector, landmark predictors and descriptor network, loaded once and shared by threads.

    Thread-safe: each concurrent HOG detection borrows its own detector (HOG releases the GIL, so
    stations detect in parallel); the CNN detector and the in-process descriptor network are
    serialised by locks. The descriptor holds the GIL, so heavy encoding belongs in worker
    processes (see `recognizer.vision.encoders`).
    """

    def __init__(self, config: EngineConfig = EngineConfig()) -> None:
        import dlib  # heavy: imported only when an engine is built

        self._dlib = dlib
        self.config = config
        if config.detector == "cnn":
            self._cnn = dlib.cnn_face_detection_model_v1(str(model_path(CNN_DETECTOR)))
            self._hog = None
        else:
            self._hog = _Lease(dlib.get_frontal_face_detector)
            self._hog.fill()  # build them now, not on some station's frame
            self._cnn = None
        self._cnn_lock = threading.Lock()
        # HOG and CNN for sweeps and for asking for one detector by name (shares this engine's detectors). With
        # hog+cnn the server sweeps in its own process, so this engine loads the CNN only if asked (replay)
        self._detectors = Detectors(self._hog, self._cnn, self._cnn_lock, load_cnn=False)
        self._encoder_lock = threading.Lock()
        self._pose5 = dlib.shape_predictor(str(model_path(FACE_LANDMARKS_5)))
        self._pose68 = dlib.shape_predictor(str(model_path(FACE_LANDMARKS_68)))
        self._encoder = dlib.face_recognition_model_v1(str(model_path(FACE_DESCRIPTOR)))
        log.info("face engine ready: %s detector, upsample %d, dlib CUDA %s",
                 config.detector, config.upsample, bool(getattr(dlib, "DLIB_USE_CUDA", False)))

    @staticmethod
    def _check(image: np.ndarray) -> np.ndarray:
        if image.dtype != np.uint8 or image.ndim not in (2, 3):
            raise ValueError(f"expected a uint8 grayscale or RGB image, got {image.dtype} {image.shape}")
        return np.ascontiguousarray(image)

    def detect(self, rgb: np.ndarray, upsample: int | None = None) -> list[Box]:
        """Face boxes in `rgb` (or grayscale), largest first."""
        rgb = self._check(rgb)
        up = self.config.upsample if upsample is None else upsample
        h, w = rgb.shape[:2]
        if self._cnn is not None:
            if min(h, w) < MIN_CNN_SIDE:
                return []
            with self._cnn_lock:
                rects = [d.rect for d in self._cnn(rgb, up)]
        else:
            with self._hog.borrow() as hog:
                rects = list(hog(rgb, up))
        boxes = [_to_box(r, h, w) for r in rects]
        return sorted(boxes, key=lambda b: -(b[2] - b[0]) * (b[1] - b[3]))

    def detect_scored(self, rgb: np.ndarray, upsample: int | None = None, adjust_threshold: float = 0.0) -> list[Detection]:
        """Faces with the detector's scores, largest first. `adjust_threshold` < 0 also returns weaker
        candidates (HOG only; the CNN detector always reports its own confident detections)."""
        rgb = self._check(rgb)
        up = self.config.upsample if upsample is None else upsample
        h, w = rgb.shape[:2]
        if self._cnn is not None:
            with self._cnn_lock:
                found = [(d.rect, float(d.confidence)) for d in self._cnn(rgb, up)]
        else:
            with self._hog.borrow() as hog:
                rects, scores, _ = hog.run(rgb, up, adjust_threshold)
            found = [(r, float(s)) for r, s in zip(rects, scores)]
        out = [Detection(_to_box(r, h, w), score, _at_edge(r, h, w)) for r, score in found]
        return sorted(out, key=lambda d: -(d.box[2] - d.box[0]) * (d.box[1] - d.box[3]))

    def detect_cnn(self, rgb: np.ndarray, upsample: int = 0) -> list[Box]:
        """Face boxes found by dlib's CNN (MMOD) detector, largest first, whatever the per-frame detector is
        (see `Detectors.detect_cnn`)."""
        return self._detectors.detect_cnn(self._check(rgb), upsample)

    def detect_hog(self, rgb: np.ndarray, upsample: int = 0) -> list[Box]:
        """Face boxes found by dlib's HOG detector, largest first, whatever the per-frame detector is."""
        return self._detectors.detect_hog(self._check(rgb), upsample)

    def sweep(self, rgb: np.ndarray, scale: float = 1.0, cnn_upsample: int = 0, hog_upsample: int = 1) -> list[Box]:
        """A thorough look at one frame (see `Detectors.sweep` and `recognizer.vision.sweep`)."""
        return self._detectors.sweep(self._check(rgb), scale, cnn_upsample, hog_upsample)

    def _rect(self, box: Box):
        top, right, bottom, left = box
        return self._dlib.rectangle(int(left), int(top), int(right), int(bottom))

    def landmarks68(self, image: np.ndarray, boxes: Sequence[Box]) -> list[np.ndarray]:
        """dlib's 68 landmarks per box, each an (68, 2) float32 array of (x, y) pixels."""
        image = self._check(image)
        out = []
        for box in boxes:
            shape = self._pose68(image, self._rect(box))
            out.append(np.array([(p.x, p.y) for p in shape.parts()], np.float32))
        return out

    def chips(self, rgb: np.ndarray, boxes: Sequence[Box]) -> np.ndarray:
        """Aligned 150x150 RGB face chips (k,150,150,3) for the descriptor network (5-point alignment)."""
        rgb = self._check(rgb)
        if not boxes:
            return np.zeros((0, CHIP_SIZE, CHIP_SIZE, 3), np.uint8)
        shapes = self._dlib.full_object_detections([self._pose5(rgb, self._rect(b)) for b in boxes])
        return np.stack(self._dlib.get_face_chips(rgb, shapes, size=CHIP_SIZE, padding=0.25))

    def encode_chips(self, chips: np.ndarray, jitter: int = 0) -> np.ndarray:
        """128-D encodings (k,128) float32 of aligned chips, in one batched dlib call."""
        if len(chips) == 0:
            return np.zeros((0, 128), np.float32)
        with self._encoder_lock:
            descriptors = self._encoder.compute_face_descriptor([np.ascontiguousarray(c) for c in chips], jitter)
        return np.array([np.array(d) for d in descriptors], np.float32)

    def encode(self, rgb: np.ndarray, boxes: Sequence[Box], jitter: int = 0) -> np.ndarray:
        """128-D encodings (k,128) of the faces at `boxes` in `rgb`."""
        return self.encode_chips(self.chips(rgb, boxes), jitter)
