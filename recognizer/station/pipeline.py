"""The per-frame path of one station: decode → detect → track → encode (only when needed) → vote → annotate.

One `StationPipeline` per connected station holds that station's tracks and identity votes; the
heavy models (`FaceEngine`, the encoder pool) are shared and passed in.
"""
from __future__ import annotations

import logging
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Callable, Optional, Protocol, Sequence

import cv2
import numpy as np

from recognizer.identity.enrol import face_crop_jpeg
from recognizer.identity.index import IndexStore
from recognizer.identity.match import IdentityVoter, OpenSetParams, PersonScores, person_scores
from recognizer.settings import check_section
from recognizer.station.types import FrameOutcome
from shared.drawing import draw_faces
from recognizer.vision.detect import FaceEngine
from recognizer.vision.encoders import ChipEncoder
from recognizer.vision.follow import LandmarkFollower
from recognizer.vision.imageio import decode_jpeg
from recognizer.vision.regions import RegionDetector, RegionParams
from recognizer.vision.sweep import StationSweep
from recognizer.vision.track import Tracker, TrackerParams
from shared.jpeg import encode_jpeg
from shared.results import KNOWN, UNKNOWN, UNSURE, Box, FaceResult

log = logging.getLogger(__name__)


@dataclass
class _Asked:
    """Encodings asked of the encoder processes and not back yet (`future`), of these tracks' faces (id, box) as
    they were on frame `frame`; `badly`: those seen too badly to call strangers; `crops`: their review-queue crops."""

    future: "Future[np.ndarray]"
    frame: int
    faces: list[tuple[int, Box]]
    badly: frozenset
    crops: list[bytes]


class Liveness(Protocol):
    def update(self, track_id: int, t: float, landmarks68: np.ndarray, gray: np.ndarray): ...
    def forget(self, track_id: int) -> None: ...


@dataclass(frozen=True)
class PipelineConfig:
    """Per-frame work. `detect_scale`: detect on the frame resized by this factor (0.25..1; boxes are mapped
    back); `reencode_every`: frames between re-encodings of a decided face; `stable_reencode_every`: the same
    when the face's look in its box stayed like its look at the last encoding on every frame since (correlation
    >= LOOK_STABLE: the same person sitting still); `pending_every`: frames between encodings while its identity
    is undecided; `jpeg_quality`: annotated reply (1..100)."""

    detect_scale: float = 1.0
    reencode_every: int = 30
    stable_reencode_every: int = 90
    pending_every: int = 1
    unsure_every: int = 5  # frames between encodings of a face whose verdict is "unsure" (seen badly)
    grow_reencode: float = 1.5  # re-encode when the box side changed by this factor since the last encoding
    jpeg_quality: int = 80
    min_face_px: int = 40
    min_judge_px: int = 60  # smaller faces may be named but never called strangers (their 150 px chip is mostly
    # interpolation: no match there is no evidence of a stranger; docs/recognition.md)
    liveness: bool = True
    regions: RegionParams = RegionParams()  # detect near tracks between full-frame passes (full_every 1: off)

    def __post_init__(self) -> None:
        check_section(self, "pipeline")  # detect_scale: the bounds of --downscale
        if self.reencode_every < 1 or self.pending_every < 1 or self.unsure_every < 1:
            raise ValueError("reencode_every, pending_every and unsure_every must be at least 1 frame")
        if self.stable_reencode_every < self.reencode_every:
            raise ValueError(f"stable_reencode_every ({self.stable_reencode_every}) must be >= reencode_every "
                             f"({self.reencode_every})")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be 1..100, got {self.jpeg_quality}")
        if self.grow_reencode <= 1.0:
            raise ValueError(f"grow_reencode must be > 1, got {self.grow_reencode}")


def _side(box) -> int:
    return max(box[2] - box[0], box[1] - box[3])


LOOK_PX = 8  # a face's look: its box in grey at 8x8, zero mean, unit norm
LOOK_SAME = 0.5  # correlation of two looks of one track below which it is checked again: measured on real photos
# at one desk, one person's frames (shake, sensor noise, the detector's box jitter) 0.64-1.0; Obama vs the stranger
# or Biden put in his place at the same size 0.31-0.37 (tests/test_person_swap.py)
LOOK_STABLE = 0.8  # a decided face whose look stayed at least this close to its look at its last encoding on every
# frame since is re-checked every stable_reencode_every frames instead of reencode_every: one person at a webcam
# desk over 90 frames (blinking, moving a little) 0.94-1.0; anything under it is re-checked as before


def _look(gray: np.ndarray, box: Box) -> Optional[np.ndarray]:
    """The face in `box` reduced to LOOK_PX x LOOK_PX grey, normalised (None when the box is off the frame)."""
    top, right, bottom, left = box
    h, w = gray.shape
    crop = gray[max(top, 0):min(bottom, h), max(left, 0):min(right, w)]
    if crop.size == 0:
        return None
    v = cv2.resize(crop, (LOOK_PX, LOOK_PX), interpolation=cv2.INTER_AREA).astype(np.float32).ravel()
    v -= v.mean()
    norm = float(np.linalg.norm(v))
    return v / norm if norm > 1e-3 else None


class _Colour:
    """A frame's colours: BGR as decoded, RGB converted the first time it is asked for (encodings, sweeps and
    their followers and full passes need it; most frames do not)."""

    def __init__(self, bgr: np.ndarray) -> None:
        self.bgr = bgr
        self._rgb: Optional[np.ndarray] = None

    @property
    def rgb(self) -> np.ndarray:
        if self._rgb is None:
            self._rgb = cv2.cvtColor(self.bgr, cv2.COLOR_BGR2RGB)
        return self._rgb


REVIEW_CROP_PX = 112  # an unknown face's crop for the review queue (~3-4 KB; the face ~75 px, above enrolment's 60)


class StationPipeline:
    """Processes one station's frames in order. Not thread-safe: one per station thread."""

    def __init__(
        self,
        engine: FaceEngine,
        encoder: ChipEncoder,
        store: IndexStore,
        config: PipelineConfig = PipelineConfig(),
        match_params: OpenSetParams = OpenSetParams(),
        tracker_params: TrackerParams = TrackerParams(),
        liveness: Optional[Liveness] = None,
        clock: Callable[[], float] = time.monotonic,
        sweep: Optional[StationSweep] = None,
        signin_liveness: Optional[Callable[[], Liveness]] = None,
    ) -> None:
        self.engine = engine
        self.encoder = encoder
        self.store = store
        self.config = config
        self.tracker = Tracker(tracker_params)
        self.voter = IdentityVoter(match_params)
        self._review: dict[int, tuple[bytes, bytes]] = {}  # track -> (encoding, crop) of an unknown/unsure face
        self.liveness = liveness if config.liveness else None
        self.clock = clock
        self._index_seen = None
        self.sweep = sweep  # CNN sweeps and their followers (detector hog+cnn); None: per-frame detector only
        self._lost = False  # a track went undetected on the last frame: sweep sooner
        self._changed = False  # a face came or a track ended since the last sweep started: sweep sooner too
        # the sign-in check's liveness when this station runs without (--no-liveness): blinks are always checked
        self.signin_liveness = signin_liveness
        self.regions = RegionDetector(config.regions) if config.regions.enabled else None
        # between HOG searches a face's box comes from the 68 landmarks liveness fits anyway (recognizer.vision.follow)
        self.follower = (LandmarkFollower(config.regions.search_every)
                         if self.regions is not None and self.liveness is not None and config.regions.search_every > 1
                         else None)
        # an encoder that can answer later (the server's encoder processes): a frame does not wait for the re-check
        # of a decided face, voted on the first frame after it is back; replay and tests encode in order
        self._submit = getattr(encoder, "submit_chips", None)
        self._asked: list[_Asked] = []
        self._looks: dict[int, np.ndarray] = {}  # track -> its look when last sent to be encoded
        self._lowest: dict[int, float] = {}  # track -> lowest correlation of its look with that one since

    def _needs_encoding(self, track, look: Optional[np.ndarray] = None) -> bool:
        frame = self.tracker.frame
        if track.encoded_frame < 0:
            return True
        since = frame - track.encoded_frame
        if self.voter.needs_more(track.id):
            return since >= self.config.pending_every
        if self.voter.state(track.id) == UNSURE:
            return since >= self.config.unsure_every
        if since >= self.config.reencode_every and (since >= self.config.stable_reencode_every
                                                    or self._lowest.get(track.id, -1.0) < LOOK_STABLE):
            return True
        then = self._looks.get(track.id)
        if look is not None and then is not None and since >= self.config.unsure_every and float(look @ then) < LOOK_SAME:
            return True  # the face in the box looks different (another person sat down in the same place?)
        ratio = _side(track.box) / max(_side(track.encoded_box), 1)
        return ratio >= self.config.grow_reencode or ratio <= 1 / self.config.grow_reencode

    # -- the steps of a frame, public so the sign-in check (recognizer.station.signin) runs the same ones --
    def decode(self, jpeg: bytes) -> tuple[np.ndarray, np.ndarray]:
        """The frame as (BGR, RGB) arrays; raises recognizer.vision.imageio.BadImage for a corrupt JPEG."""
        bgr = decode_jpeg(jpeg)
        return bgr, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    def detect(self, rgb: np.ndarray, scale: Optional[float] = None) -> list[Box]:
        """Faces the per-frame detector finds in `rgb` (or the frame in grey, as `process` gives it), at least
        `min_face_px` a side, as boxes of the full frame.
        `scale`: detect on the frame resized by this factor (default: the config's `detect_scale`)."""
        scale = self.config.detect_scale if scale is None else scale
        if scale < 1.0:
            small = cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            boxes = [tuple(int(round(v / scale)) for v in b) for b in self.engine.detect(small)]
        else:
            boxes = self.engine.detect(rgb)
        return self._big_enough(boxes, scale)

    def _big_enough(self, boxes: Sequence[Box], scale: Optional[float] = None) -> list[Box]:
        scale = self.config.detect_scale if scale is None else scale
        return [b for b in boxes if _side(b) >= self.config.min_face_px * scale]

    def encode(self, rgb: np.ndarray, boxes: Sequence[Box]) -> np.ndarray:
        """One 128-d encoding per box, shape (len(boxes), 128)."""
        return self.encoder.encode_chips(self.engine.chips(rgb, list(boxes)))

    @property
    def match_params(self) -> OpenSetParams:
        """The open-set matching thresholds this station's faces are judged by."""
        return self.voter.params

    def scores(self, encodings: np.ndarray) -> PersonScores:
        """Distances of `encodings` to every enrolled person of the current index (the voter's tolerance)."""
        return person_scores(self.store.index, encodings, self.voter.params.tolerance)

    def is_enrolled(self, name: str) -> bool:
        return name in self.store.index.arrays.people

    def liveness_of(self, bgr: Optional[np.ndarray], faces: Sequence[tuple[int, Box]], now: float,
                    liveness: Optional[Liveness] = None, gray: Optional[np.ndarray] = None,
                    points: Optional[Sequence[np.ndarray]] = None) -> dict:
        """Feed each (track id, box) on this frame to `liveness` (default: the station's own); track id → its
        result. Empty when there is no liveness or no face. `gray`: the frame in grey, when already made (then
        `bgr` is not used);
        `points`: the faces' 68 landmarks, when already fitted."""
        liveness = self.liveness if liveness is None else liveness
        if liveness is None or not faces:  # FaceLiveness has __len__: never test it for truth
            return {}
        if gray is None:
            gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
        if points is None:
            points = self.engine.landmarks68(gray, [box for _, box in faces])
        return {track_id: liveness.update(track_id, now, p, gray) for (track_id, _), p in zip(faces, points)}

    def annotate(self, bgr: np.ndarray, faces: Sequence[FaceResult]) -> bytes:
        """The frame with the faces drawn on it, as the reply JPEG."""
        return encode_jpeg(draw_faces(bgr, faces), self.config.jpeg_quality)

    def _ask(self, rgb: np.ndarray, bgr: np.ndarray, todo: Sequence, badly: frozenset) -> None:
        """Ask the encoder processes for `todo`'s encodings without waiting (the crops for the review queue are cut
        now, from this frame, before the boxes are drawn on it)."""
        crops = [face_crop_jpeg(bgr, t.box, max_side=REVIEW_CROP_PX, quality=80) for t in todo]
        future = self._submit(self.engine.chips(rgb, [t.box for t in todo]))
        self._asked.append(_Asked(future, self.tracker.frame, [(t.id, t.box) for t in todo], badly, crops))

    def _collect(self, index) -> None:
        """Vote on the encodings that came back since the last frame (of tracks that still exist)."""
        done = [job for job in self._asked if job.future.done()]
        if not done:
            return
        self._asked = [job for job in self._asked if job not in done]
        for job in done:
            try:
                encodings = job.future.result()
            except Exception:  # an encoder process died: those faces are asked again on the next frame
                log.exception("encoding %d faces failed", len(job.faces))
                continue
            alive = [i for i, (face_id, _) in enumerate(job.faces) if face_id in self.tracker.tracks]
            if alive:
                self._vote(index, job.frame, [job.faces[i] for i in alive], encodings[alive], job.badly,
                           lambda k, job=job, alive=alive: job.crops[alive[k]])

    def _vote(self, index, frame: int, faces: list[tuple[int, Box]], encodings: np.ndarray, badly: frozenset,
              crop: Callable[[int], bytes]) -> None:
        """Add the encodings of `faces` (as seen on `frame`) to their tracks' votes; an unknown or unsure face is
        kept with its encoding and `crop(i)` for the review queue."""
        idents = self.voter.observe_many([(face_id, encodings[i : i + 1]) for i, (face_id, _) in enumerate(faces)],
                                         index, badly)
        for face_id in self.voter.take_restarted():  # another person in the same box: the last one's state goes
            self._review.pop(face_id, None)
            if self.liveness is not None:
                self.liveness.forget(face_id)
        for i, (face_id, box) in enumerate(faces):
            track = self.tracker.tracks[face_id]
            track.encoded_frame, track.encoded_box = frame, box
            if idents[face_id].state in (UNKNOWN, UNSURE):  # kept for the review queue (the alert carries it)
                self._review[face_id] = (np.asarray(encodings[i], "<f4").tobytes(), crop(i))
            else:
                self._review.pop(face_id, None)

    def _follow_by_landmarks(self, gray: np.ndarray, tracked: Sequence, fitted: dict) -> Callable[[int], Optional[Box]]:
        """`RegionDetector.detect`'s `follow`: the box of `tracked[i]` on this frame from its 68 landmarks fitted
        from its last box, when HOG found it less than `search_every` frames ago, it was seen on the last frame and
        the box is plausible (recognizer.vision.follow); the landmarks are kept in `fitted` for liveness."""
        frame = self.tracker.frame + 1
        h, w = gray.shape

        def follow(i: int) -> Optional[Box]:
            track = tracked[i]
            if track.last_seen != frame - 1 or not self.follower.may_follow(track.id, frame):
                return None
            points = self.engine.landmarks68(gray, [track.box])[0]
            box = self.follower.follow(track.id, track.box, points, lambda b: _look(gray, b), h, w)
            if box is not None:
                fitted[box] = points
            return box

        return follow

    def process(self, jpeg: bytes, annotate: bool = True) -> FrameOutcome:
        """Run one frame; raises recognizer.vision.imageio.BadImage for a corrupt JPEG (nothing else changes).
        `annotate` False: no annotated JPEG is made (the edge draws the boxes itself); `outcome.evidence()` makes
        it if an alert needs it."""
        t0 = time.perf_counter()
        colour = _Colour(decode_jpeg(jpeg))
        t1 = time.perf_counter()
        # grey for the crops, the motion test, liveness and the thumbnail. Not decoded as grey (~0.3 ms less): the
        # JPEG's own luma differs from this by up to 13 levels at edges, and bench.replay_quality lost a blink
        gray = cv2.cvtColor(colour.bgr, cv2.COLOR_BGR2GRAY)

        h, w = gray.shape
        thumb = cv2.resize(gray, (max(1, w // 8), max(1, h // 8)), interpolation=cv2.INTER_AREA)
        fitted: dict[Box, np.ndarray] = {}  # landmarks of the faces followed by them, by their box on this frame
        if self.regions is None:
            boxes = self.detect(colour.rgb)
        else:  # a full-frame pass now and then, crops (in grey) around the tracks between (recognizer.vision.regions);
            # the full pass on the frame's colours, as before: on grey it boxed other marginal faces of the demo clip
            tracked = list(self.tracker.tracks.values())
            follow = self._follow_by_landmarks(gray, tracked, fitted) if self.follower is not None else None
            boxes = self._big_enough(self.regions.detect(gray, [t.box for t in tracked], self._lost,
                                                         lambda _: self.detect(colour.rgb), self.engine.detect,
                                                         self.config.detect_scale, gray, follow))
        n_hog = len(boxes)  # boxes after these are faces a sweep found and the per-frame detector does not see
        if self.sweep is not None:  # faces the last CNN sweep found and HOG does not, followed to this frame
            sweeps = self.sweep.sweeps
            # sooner (idle_period_s) also when the faces HOG sees changed since the last sweep: others that HOG
            # cannot see (turned) may have come with them; without it their sweep came by the luck of a HOG miss
            extra = self.sweep.step(lambda: colour.rgb, boxes, self.clock(), self._lost or self._changed)
            boxes = boxes + [b for b in extra if _side(b) >= self.config.min_face_px]
            self._changed = self._changed and self.sweep.sweeps == sweeps
        update = self.tracker.update(boxes)
        hog_ids = {t.id for t in update.tracks[:n_hog]}
        self._changed = self._changed or bool(update.ended) or any(i in hog_ids for i in update.new)
        self._lost = bool(update.ended) or any(t.misses > 0 for t in self.tracker.tracks.values())
        t2 = time.perf_counter()

        index = self.store.index
        if index is not self._index_seen:  # enrolment or reload: let every face be judged again
            for track in self.tracker.tracks.values():
                track.encoded_frame = -1
            self.voter = IdentityVoter(self.voter.params)
            self._index_seen = index
        for track_id in update.ended:
            if self.follower is not None:
                self.follower.forget(track_id)
            self.voter.forget(track_id)
            self._review.pop(track_id, None)
            self._looks.pop(track_id, None)
            self._lowest.pop(track_id, None)
            if self.liveness is not None:
                self.liveness.forget(track_id)

        self._collect(index)
        asked = {face_id for job in self._asked for face_id, _ in job.faces}
        looks = {t.id: _look(gray, t.box) for t in update.tracks if t.id not in asked}
        for track_id, look in looks.items():
            then = self._looks.get(track_id)
            same = float(look @ then) if look is not None and then is not None else -1.0
            self._lowest[track_id] = min(self._lowest.get(track_id, 1.0), same)
        todo = [t for t in update.tracks if t.id not in asked and self._needs_encoding(t, looks[t.id])]
        for t in todo:
            self._lowest[t.id] = 1.0
            if looks[t.id] is not None:
                self._looks[t.id] = looks[t.id]
            else:  # off the frame: no look to compare the next frames with (re-checked every reencode_every)
                self._looks.pop(t.id, None)
        if todo:
            # faces seen too badly to call strangers (they may still be named): under min_judge_px, or seen only
            # by a sweep (turned or badly lit: an enrolled person in profile measured 0.58-0.75 from his photos)
            swept = {t.id for t in update.tracks[n_hog:]}
            badly = frozenset(t.id for t in todo if t.id in swept or _side(t.box) < self.config.min_judge_px)
            # a face still being judged is waited for (its name comes as soon as it can); a decided face's re-check
            # goes to the encoder processes while this and the next frames go on, when the encoder can do that
            later = [t for t in todo if not self.voter.needs_more(t.id)] if self._submit is not None else []
            now = [t for t in todo if t not in later]
            if later:
                self._ask(colour.rgb, colour.bgr, later, badly)
            if now:
                encodings = self.encode(colour.rgb, [t.box for t in now])
                self._vote(index, self.tracker.frame, [(t.id, t.box) for t in now], encodings, badly,
                           lambda i: face_crop_jpeg(colour.bgr, now[i].box, max_side=REVIEW_CROP_PX, quality=80))
        t3 = time.perf_counter()

        live = {}
        if self.liveness is not None and update.tracks:
            missing = [t.box for t in update.tracks if t.box not in fitted]
            if missing:
                fitted.update(zip(missing, self.engine.landmarks68(gray, missing)))
            points = [fitted[t.box] for t in update.tracks]
            live = self.liveness_of(None, [(t.id, t.box) for t in update.tracks], self.clock(), gray=gray,
                                    points=points)
            if self.follower is not None:  # where HOG found a face: its box relative to its landmarks
                for t, p in zip(update.tracks[:n_hog], points):
                    if t.box in missing:
                        self.follower.anchor(t.id, t.box, p, _look(gray, t.box), self.tracker.frame)
        t4 = time.perf_counter()

        faces = []
        for i, track in enumerate(update.tracks):
            ident = self.voter.current(track.id)
            state = ident.state
            result = live.get(track.id)
            faces.append(FaceResult(
                box=tuple(track.box),
                track=track.id,
                state=state,
                name=ident.name if state == KNOWN else None,
                distance=None if not np.isfinite(ident.distance) else round(float(ident.distance), 4),
                confidence=round(float(ident.confidence), 3),
                liveness=result.state.value if result is not None else "unknown" if self.liveness is not None else "off",
                blinks=result.blinks if result is not None else 0,
                candidate=ident.candidate if state == UNSURE else None,
                found_by=None if self.sweep is None else "sweep" if i >= n_hog else "hog",
                review=self._review.get(track.id) if state in (UNKNOWN, UNSURE) else None,
            ))
        annotated, draw = b"", None
        if annotate:
            annotated = self.annotate(colour.bgr, faces)
        else:  # the frame is not drawn on: an alert that wants it as evidence draws it then
            draw = lambda: self.annotate(colour.bgr, faces)  # noqa: E731
        t5 = time.perf_counter()
        timings = {
            "decode": (t1 - t0) * 1e3,
            "detect": (t2 - t1) * 1e3,
            "encode": (t3 - t2) * 1e3,
            "liveness": (t4 - t3) * 1e3,
            "annotate": (t5 - t4) * 1e3,
            "total": (t5 - t0) * 1e3,
        }
        log.debug("frame %d: %d faces, %d encoded, %.1f ms", self.tracker.frame, len(faces), len(todo), timings["total"])
        return FrameOutcome(faces, annotated, {k: round(v, 2) for k, v in timings.items()}, len(todo), thumb, draw)
