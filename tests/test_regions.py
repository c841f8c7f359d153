"""Detection near tracks (recognizer.vision.regions): crops between full passes, a new face still boxed at once."""
from __future__ import annotations

import time

import cv2
import numpy as np
import pytest

from recognizer.identity.index import IndexStore
from recognizer.station.pipeline import PipelineConfig, StationPipeline
from recognizer.vision.regions import Region, RegionDetector, RegionParams, merge, motion_region, region_around
from recognizer.vision.track import iou
from tests.conftest import FIXTURES, REPO


def test_region_around_grows_the_box_clamps_it_and_scales_big_faces_down() -> None:
    params = RegionParams(margin=0.5, face_px=90)
    r = region_around((100, 300, 280, 120), 480, 640, params)  # a 180 px face
    assert (r.top, r.left, r.bottom, r.right) == (10, 30, 370, 390)
    assert r.scale == pytest.approx(0.5)
    edge = region_around((0, 640, 60, 580), 480, 640, params)  # a small face in the corner: clamped, never upscaled
    assert (edge.top, edge.right, edge.scale) == (0, 640, 1.0)


def test_the_area_that_moved_outside_the_tracks_is_searched_grown_to_fit_a_face() -> None:
    params = RegionParams(cell_px=8, motion_level=20, motion_cells=3)
    ref = np.zeros((60, 80), np.int16)
    now = ref.copy()
    now[10:20, 40:50] = 100  # something moved in cells 10..19 x 40..49: pixels 80..160 x 320..400
    assert motion_region(ref, ref, [], params, 480, 640) is None
    assert motion_region(ref, now, [], params, 480, 640) == Region(32, 272, 208, 448, 1.0)
    assert motion_region(ref, now, [Region(80, 320, 160, 400, 1.0)], params, 480, 640) is None  # a track's crop
    assert merge([(0, 100, 100, 0), (5, 105, 105, 5), (200, 300, 300, 200)]) == [(0, 100, 100, 0), (200, 300, 300, 200)]


def test_full_passes_space_out_while_the_scene_stays_and_come_back_when_it_changes() -> None:
    """The periodic full pass's interval doubles after each pass that found just the followed faces (10, 20, 40,
    40 ...), and is 10 again once a pass finds another face, a track is lost or an area that moved holds a face."""
    frame = np.full((480, 640, 3), 90, np.uint8)
    face, other = (100, 300, 280, 120), (100, 600, 200, 500)
    seen = {"full": [face]}
    regions = RegionDetector(RegionParams(full_every=10, full_every_max=40))

    def run(frames: int, lost: bool = False) -> list[int]:
        """Frame numbers (of this run) on which a full pass ran."""
        fulls = []
        for i in range(frames):
            before = regions.full_passes
            regions.detect(frame, [face], lost and i == 0, lambda rgb: list(seen["full"]), lambda crop: [])
            if regions.full_passes > before:
                fulls.append(i)
        return fulls

    regions.detect(frame, [], False, lambda rgb: [face], lambda crop: [])  # first frame: a full pass, the face found
    assert run(200) == [9, 29, 69, 109, 149, 189]  # after 10, 20, then 40 frames: no more than full_every_max
    assert regions.interval == 40
    seen["full"] = [face, other]  # the next periodic pass finds someone else: back to every 10
    assert run(60)[:2] == [29, 39] and regions.interval == 10
    seen["full"] = [face]
    run(40)
    assert regions.interval == 40
    run(1, lost=True)  # a track lost: a full pass at once, and the short interval again
    assert regions.interval == 10
    never = RegionDetector(RegionParams(full_every=10, full_every_max=10))  # --full-detect-every-max 10: as before
    never.detect(frame, [], False, lambda rgb: [face], lambda crop: [])
    for _ in range(50):
        never.detect(frame, [face], False, lambda rgb: [face], lambda crop: [])
    assert never.full_passes == 6 and never.interval == 10


def _frames_with_a_face_entering(enter_at: int, count: int) -> list[bytes]:
    """A 1280x480 desk: Obama on the left from the first frame, Biden on the right from frame `enter_at`."""
    obama = cv2.resize(cv2.imread(str(FIXTURES / "obama_probe.jpg")), (640, 360), interpolation=cv2.INTER_AREA)
    biden = cv2.resize(cv2.imread(str(FIXTURES / "biden_probe.jpg")), (420, 420), interpolation=cv2.INTER_AREA)
    rng = np.random.default_rng(1)
    out = []
    for i in range(count):
        canvas = np.full((480, 1280, 3), 90, np.uint8)
        canvas[60:420, 0:640] = obama
        if i >= enter_at:
            canvas[30:450, 800:1220] = biden
        noisy = np.clip(canvas.astype(np.int16) + rng.normal(0, 2, canvas.shape).round().astype(np.int16), 0, 255)
        out.append(cv2.imencode(".jpg", noisy.astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes())
    return out


def _pipeline(engine, tmp_path, full_every: int) -> StationPipeline:
    config = PipelineConfig(liveness=False, regions=RegionParams(full_every=full_every))
    return StationPipeline(engine, engine, IndexStore(tmp_path), config)


def _first_frame_with(pipeline: StationPipeline, frames: list[bytes], x_from: int) -> int:
    for i, jpeg in enumerate(frames):
        if any(face.box[3] >= x_from for face in pipeline.process(jpeg).faces):
            return i
    return -1


def test_a_face_entering_between_full_passes_is_boxed_within_two_frames(engine, tmp_path) -> None:
    enter_at = 4  # well before the next periodic full pass (every 10 frames): only the motion test can find it
    frames = _frames_with_a_face_entering(enter_at, 9)
    baseline = _first_frame_with(_pipeline(engine, tmp_path, 1), frames, 640)  # whole frame every frame
    assert baseline == enter_at
    pipeline = _pipeline(engine, tmp_path, 10)
    found = _first_frame_with(pipeline, frames, 640)
    assert 0 <= found - enter_at <= 1, f"new face boxed {found - enter_at} frames after it entered"
    assert pipeline.regions.crop_passes >= enter_at - 2  # frames before it really searched only around Obama


def test_a_still_scene_is_searched_in_crops_and_keeps_its_boxes(engine, tmp_path) -> None:
    frames = _frames_with_a_face_entering(10**6, 12)  # Obama alone
    full = _pipeline(engine, tmp_path, 1)
    regions = _pipeline(engine, tmp_path, 10)
    for jpeg in frames:
        a, b = full.process(jpeg).faces, regions.process(jpeg).faces
        assert len(a) == len(b) == 1 and iou(a[0].box, b[0].box) >= 0.6
        assert a[0].track == b[0].track  # the track carries on through crop frames
    assert regions.regions.crop_passes >= 9 and regions.regions.full_passes <= 3


def _clip_jpegs(path, limit: int) -> list[bytes]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while len(frames) < limit:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 80])[1].tobytes())
    cap.release()
    return frames


def _compare(engine, tmp_path, frames: list[bytes]) -> tuple[list[float], int, float, float, StationPipeline]:
    """Per face of the full-frame run: its best IoU among the crop run's boxes; extra boxes; CPU s of each run."""
    runs = {}
    for every in (1, 10):
        pipeline = _pipeline(engine, tmp_path, every)
        start = time.process_time()
        runs[every] = ([[f.box for f in pipeline.process(j).faces] for j in frames], time.process_time() - start,
                       pipeline)
    (full, full_cpu, _), (crops, crops_cpu, p) = runs[1], runs[10]
    pairs = [max((iou(a, b) for b in bs), default=0.0) for as_, bs in zip(full, crops) for a in as_]
    extra = 0  # boxes the full-frame run does not have that are no face either (dlib's CNN, upsampled, finds none there)
    for i, (as_, bs) in enumerate(zip(full, crops)):
        new = [b for b in bs if max((iou(a, b) for a in as_), default=0.0) < 0.3]
        if new:  # a crop's HOG can find a face the whole frame's missed (the demo clip: 5 such, all real faces)
            rgb = cv2.cvtColor(cv2.imdecode(np.frombuffer(frames[i], np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
            for b in new:  # the CNN on the box grown by its side each way (a whole frame upsampled costs ~10x)
                t, r, btm, lft = b
                side = max(r - lft, btm - t)
                y0, x0 = max(0, t - side), max(0, lft - side)
                crop = np.ascontiguousarray(rgb[y0 : btm + side, x0 : r + side])
                faces = [(ft + y0, fr + x0, fb + y0, fl + x0) for ft, fr, fb, fl in engine.sweep(crop, cnn_upsample=1,
                                                                                             hog_upsample=0)]
                extra += max((iou(f, b) for f in faces), default=0.0) < 0.5
    return pairs, extra, full_cpu, crops_cpu, p


def test_on_the_demo_clip_crops_find_the_faces_a_full_frame_finds(engine, tmp_path) -> None:
    """The demo clip (people moving on a stage, shipped in samples/): same faces, boxes within tolerance."""
    frames = _clip_jpegs(REPO / "samples" / "hamilton_clip.mp4", 275)
    pairs, extra, full_cpu, crops_cpu, p = _compare(engine, tmp_path, frames)
    assert len(pairs) >= 100
    assert sum(v < 0.3 for v in pairs) <= 0.03 * len(pairs) and extra <= 0.03 * len(pairs)
    assert float(np.median(pairs)) >= 0.8
    assert p.regions.crop_passes > 0
    assert crops_cpu < full_cpu * 1.1  # never dearer than the whole frame (here most passes are full: motion)


def test_on_a_webcam_clip_crops_keep_the_boxes_for_less_cpu(engine, tmp_path, data_dir) -> None:
    """One person at a desk (640x480 webcam): mostly crops, the same face every frame, boxes within tolerance."""
    frames = _clip_jpegs(data_dir / "video" / "eyeblink8_concat_webcam.mp4", 150)
    pairs, extra, full_cpu, crops_cpu, p = _compare(engine, tmp_path, frames)
    assert len(pairs) >= 145 and min(pairs) >= 0.5 and float(np.median(pairs)) >= 0.75 and extra == 0
    assert p.regions.crop_passes > 2 * p.regions.full_passes
    assert crops_cpu < 0.8 * full_cpu  # measured ~0.4x: detection is most of a frame's work
