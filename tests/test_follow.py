"""Following faces by their 68 landmarks between HOG searches (recognizer.vision.follow): same boxes for less HOG,
and a face that leaves loses its box within `search_every - 1` frames."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from recognizer.identity.index import IndexStore
from recognizer.liveness.blinks import FaceLiveness, LivenessParams
from recognizer.station.pipeline import PipelineConfig, StationPipeline
from recognizer.vision.follow import Anchor, FollowParams, LandmarkFollower, plausible
from recognizer.vision.regions import RegionParams
from recognizer.vision.track import iou
from tests.conftest import FIXTURES


def _face_points(cx: float, cy: float, size: float) -> np.ndarray:
    """68 made-up landmark positions: a fixed pattern moved to (cx, cy) and scaled."""
    pattern = np.random.default_rng(3).normal(0, 1, (68, 2))
    return (pattern * size + (cx, cy)).astype(np.float32)


def test_a_box_follows_its_landmarks_where_hog_put_it() -> None:
    points = _face_points(200, 150, 20)
    anchor = Anchor.of((100, 260, 220, 140), points, None, frame=4)
    assert anchor.box(points, 480, 640) == (100, 260, 220, 140)
    moved = points * 1.1 + (15, -5)  # the face came closer and moved: the box moves and grows with it
    top, right, bottom, left = anchor.box(moved, 480, 640)
    assert (right - left, bottom - top) == (132, 132)
    assert anchor.box(points + (600, 0), 480, 640)[1] == 640  # clamped to the frame


def test_a_followed_box_must_stay_plausible_and_hog_searches_every_n_frames() -> None:
    params = FollowParams(max_shift=0.25, max_scale=1.15)
    box = (100, 200, 200, 100)
    assert plausible(box, (105, 210, 205, 110), params)
    assert not plausible(box, (100, 240, 200, 140), params)  # moved 0.4 of its side in one frame
    assert not plausible(box, (90, 215, 215, 90), params)  # grew by 1.25
    follower = LandmarkFollower(3, params)
    points = _face_points(150, 150, 15)
    look = np.ones(64, np.float32) / 8
    follower.anchor(7, box, points, look, frame=10)
    assert [follower.may_follow(7, f) for f in (10, 11, 12, 13)] == [False, True, True, False]
    assert not follower.may_follow(8, 11)  # never anchored: HOG searches
    assert follower.follow(7, box, points, lambda b: look, 480, 640) == box
    assert follower.follow(7, box, points, lambda b: -look, 480, 640) is None  # something else in the box now
    assert follower.follow(7, box, points, lambda b: None, 480, 640) is None  # nothing to look at
    assert (follower.followed, follower.refused) == (1, 2)
    with pytest.raises(ValueError, match="search_every"):
        LandmarkFollower(1)


def _desk(leave_at: int, count: int, empty) -> list[bytes]:
    """A 640x480 desk with Obama's photo in its middle, gone from frame `leave_at` (`empty(canvas)` draws the
    place without him); a little sensor noise on every frame."""
    obama = cv2.resize(cv2.imread(str(FIXTURES / "obama_probe.jpg")), (320, 180), interpolation=cv2.INTER_AREA)
    rng = np.random.default_rng(1)
    out = []
    for i in range(count):
        canvas = np.full((480, 640, 3), 90, np.uint8)
        canvas[150:330, 160:480] = obama
        if i >= leave_at:
            empty(canvas)
        noisy = np.clip(canvas.astype(np.int16) + rng.normal(0, 2, canvas.shape).round().astype(np.int16), 0, 255)
        out.append(cv2.imencode(".jpg", noisy.astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes())
    return out


def _pipeline(engine, tmp_path, search_every: int) -> StationPipeline:
    config = PipelineConfig(regions=RegionParams(search_every=search_every))
    return StationPipeline(engine, engine, IndexStore(tmp_path), config, liveness=FaceLiveness(LivenessParams()))


def _wall(canvas: np.ndarray) -> None:
    canvas[150:330, 160:480] = 90


def _texture(canvas: np.ndarray) -> None:
    """The seat shows something textured, not a face: a piece of another photo's background, blurred."""
    kit = cv2.imread(str(FIXTURES / "stranger_kit.jpg"))
    patch = cv2.resize(kit[: kit.shape[0] // 4, : kit.shape[1] // 3], (320, 180), interpolation=cv2.INTER_AREA)
    canvas[150:330, 160:480] = cv2.GaussianBlur(patch, (0, 0), 3)


@pytest.mark.parametrize("empty", [_wall, _texture], ids=["wall", "texture"])
def test_a_face_that_leaves_loses_its_box_within_search_every_frames(engine, tmp_path, empty) -> None:
    search_every = 3
    for leave_at in (11, 12, 13):  # whatever the phase of the HOG searches when he leaves
        pipeline = _pipeline(engine, tmp_path, search_every)
        boxed = [bool(pipeline.process(jpeg).faces) for jpeg in _desk(leave_at, leave_at + 8, empty)]
        assert all(boxed[:leave_at]), "the face is boxed while it is there"
        ghost = sum(boxed[leave_at:])
        assert ghost <= search_every - 1 and not any(boxed[leave_at + search_every - 1 :]), (leave_at, boxed)
        assert pipeline.follower.followed >= leave_at // 2  # most frames before were followed, not searched


def test_followed_boxes_match_hogs_on_a_webcam_clip_for_fewer_searches(engine, tmp_path, data_dir) -> None:
    """One person at a desk (640x480 webcam, blinking, moving a little): the boxes of a run that follows faces by
    their landmarks stay on HOG's boxes of a run that searches around the face on every frame."""
    cap = cv2.VideoCapture(str(data_dir / "video" / "eyeblink8_concat_webcam.mp4"))
    frames = []
    while len(frames) < 150:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 80])[1].tobytes())
    cap.release()
    searched, followed = _pipeline(engine, tmp_path, 1), _pipeline(engine, tmp_path, 3)
    pairs = []
    for jpeg in frames:
        a, b = searched.process(jpeg).faces, followed.process(jpeg).faces
        assert len(a) == len(b)
        pairs += [iou(x.box, y.box) for x, y in zip(a, b)]
    assert len(pairs) >= 145 and min(pairs) >= 0.6 and float(np.median(pairs)) >= 0.8
    assert followed.follower.followed >= len(frames) / 2
    assert followed.regions.crop_passes > 0 and searched.follower is None
