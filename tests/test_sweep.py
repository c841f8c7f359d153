"""Detection sweeps: when they run, how the CPU budget paces them, and how the faces they find are followed.

The scheduling and follower logic is pure and tested here without dlib; the last tests run the real CNN sweep
on the shipped Hamilton clip: a face that per-frame HOG never boxes is found and becomes a track.
"""
from __future__ import annotations

from concurrent.futures import Future

import cv2
import numpy as np
import pytest

from recognizer.vision.sweep import FollowerSet, StationSweep, SweepBudget, SweepParams, SweepSchedule, new_faces
from tests.conftest import SAMPLE_CLIP

FRAME = np.zeros((360, 640, 3), np.uint8)


class SlidingFollower:
    """A stand-in for dlib's correlation tracker: the box moves `dx` per update; quality from a script."""

    def __init__(self, box, dx=2, qualities=()):
        self.box, self.dx, self.qualities = box, dx, list(qualities)

    def update(self, rgb):
        t, r, b, l = self.box
        self.box = (t, r + self.dx, b, l + self.dx)
        return self.box, self.qualities.pop(0) if self.qualities else 10.0


def test_schedule_first_frame_then_period_and_sooner_when_nobody_or_lost():
    s = SweepSchedule(SweepParams(period_s=2.5, idle_period_s=1.0))
    assert s.due(0.0, faces_seen=1, lost=False)
    s.started(0.0)
    assert not s.due(1.2, 1, False) and s.due(2.5, 1, False)
    assert s.due(1.0, 0, False) and s.due(1.0, 1, True) and not s.due(0.9, 0, True)


def test_params_are_validated():
    for bad in (dict(budget=0), dict(budget=1.5), dict(idle_period_s=3, period_s=2), dict(scale=0.1),
                dict(cnn_upsample=3), dict(overlap=0)):
        with pytest.raises(ValueError):
            SweepParams(**bad)


def test_budget_allows_one_sweep_at_a_time_and_paces_by_cost():
    b = SweepBudget(0.25)
    assert b.try_acquire(0.0)
    assert not b.try_acquire(0.5)  # another station while the first sweep runs
    b.release(0.0, 1.0)  # took 1 s: at 25% of a core the next may start at 4 s
    assert not b.try_acquire(3.9) and b.try_acquire(4.0)


def test_new_faces_leaves_out_what_hog_sees_and_duplicates():
    hog = [(100, 200, 200, 100)]
    found = [(105, 205, 205, 105), (50, 500, 150, 400), (52, 502, 152, 402)]
    assert new_faces(found, hog, 0.3) == [(50, 500, 150, 400)]


def test_followers_follow_until_hog_takes_over_lost_or_expired():
    p = SweepParams(follow_s=5.0, min_quality=6.0)
    fs = FollowerSet(p, lambda rgb, box: SlidingFollower(box, dx=2, qualities=[10, 10, 3]))
    fs.replace([(50, 300, 150, 200), (50, 600, 150, 500)], [(52, 602, 152, 502)], FRAME, FRAME, now=0.0)
    assert [i.box for i in fs.items] == [(50, 300, 150, 200)]  # the second face HOG already has
    assert fs.step(FRAME, [], 0.1) == [(50, 302, 150, 202)]
    assert fs.step(FRAME, [], 0.2) == [(50, 304, 150, 204)]
    assert fs.step(FRAME, [], 0.3) == []  # quality 3 < 6: lost

    fs.replace([(50, 300, 150, 200)], [], FRAME, FRAME, now=1.0)
    assert fs.step(FRAME, [(50, 302, 150, 202)], 1.1) == []  # HOG sees it now: HOG's box wins
    fs.replace([(50, 300, 150, 200)], [], FRAME, FRAME, now=2.0)
    assert fs.step(FRAME, [], 6.9) and fs.step(FRAME, [], 7.1) == []  # older than follow_s without a sweep


def test_follower_from_an_older_frame_is_caught_up_to_the_current_one():
    fs = FollowerSet(SweepParams(), lambda rgb, box: SlidingFollower(box, dx=10))
    fs.replace([(50, 300, 150, 200)], [], FRAME, FRAME.copy(), now=0.0)
    assert fs.items[0].box == (50, 310, 150, 210)


class ManualSweeper:
    """Sweeps whose results the test hands out, as a background process would, later."""

    budget = None

    def __init__(self):
        self.futures: list[Future] = []

    def submit(self, rgb):
        self.futures.append(Future())
        return self.futures[-1]


def test_station_never_waits_for_a_sweep_and_has_one_outstanding():
    sweeper = ManualSweeper()
    st = StationSweep(sweeper, SweepParams(period_s=2.0, idle_period_s=1.0), lambda rgb, b: SlidingFollower(b, 0))
    assert st.step(FRAME, [], 0.0, lost=False) == [] and len(sweeper.futures) == 1
    assert st.step(FRAME, [], 1.5, lost=False) == [] and len(sweeper.futures) == 1  # still running: no second
    sweeper.futures[0].set_result([(50, 300, 150, 200)])
    assert st.step(FRAME, [], 1.6, lost=False) == [(50, 300, 150, 200)]  # result used on the next frame
    assert len(sweeper.futures) == 1  # a face is seen now: the next sweep waits for the period
    assert st.step(FRAME, [], 2.1, lost=False) == [(50, 300, 150, 200)] and len(sweeper.futures) == 2
    sweeper.futures[1].set_exception(RuntimeError("CNN failed"))
    assert st.step(FRAME, [], 2.2, lost=False) == [(50, 300, 150, 200)]  # a failed sweep keeps the followers


def test_a_frame_given_as_a_function_is_only_asked_for_when_a_sweep_or_a_follower_needs_it():
    """The pipeline decodes frames in grey and hands `step` a function for the colours: not called while no sweep
    starts (none due, or the sweeps' CPU budget spent) and no follower is followed."""
    sweeper = ManualSweeper()
    sweeper.budget = SweepBudget(0.25)
    asked = []

    def frame():
        asked.append(1)
        return FRAME

    st = StationSweep(sweeper, SweepParams(period_s=2.0, idle_period_s=1.0), lambda rgb, b: SlidingFollower(b, 0))
    assert sweeper.budget.try_acquire(0.0)  # another station's sweep holds the budget
    assert st.step(frame, [], 0.0, lost=True) == [] and not asked and not sweeper.futures
    sweeper.budget.release(0.0, 0.0)
    assert st.step(frame, [], 0.1, lost=True) == [] and len(asked) == 1 and len(sweeper.futures) == 1
    assert st.step(frame, [], 0.2, lost=True) == [] and len(asked) == 1  # still running: nothing to decode
    sweeper.futures[0].set_result([(50, 300, 150, 200)])
    assert st.step(frame, [], 0.3, lost=False) == [(50, 300, 150, 200)] and len(asked) == 2  # a follower starts


def clip_frames(indices):
    cap = cv2.VideoCapture(str(SAMPLE_CLIP))
    frames, i = {}, 0
    while len(frames) < len(indices):
        ok, frame = cap.read()
        assert ok
        if i in indices:
            frames[i] = frame
        i += 1
    cap.release()
    return frames


@pytest.mark.timeout(300)
def test_cnn_sweep_finds_a_face_hog_misses_and_it_becomes_a_track(sample_index_dir):
    """Hamilton clip frame 40: a face turned to three-quarter view, never boxed by per-frame HOG; with
    hog+cnn the sweep finds it, the correlation tracker follows it, and the pipeline reports one track."""
    from recognizer.app import RecognizerSettings, pipeline_factory
    from recognizer.identity.index import IndexStore
    from recognizer.vision.detect import EngineConfig, FaceEngine

    frames = clip_frames(set(range(40, 46)))
    hog_engine = FaceEngine()
    assert hog_engine.detect(cv2.cvtColor(frames[40], cv2.COLOR_BGR2RGB)) == []  # HOG: nobody
    settings = RecognizerSettings(engine=EngineConfig(detector="hog+cnn"), index_dir=sample_index_dir)
    engine = FaceEngine(settings.engine)
    clock = iter(np.arange(0, 1, 1 / 30))
    pipeline = pipeline_factory(settings, engine, engine, IndexStore(sample_index_dir), clock=lambda: next(clock))()
    tracks = []
    for i in range(40, 46):
        outcome = pipeline.process(cv2.imencode(".jpg", frames[i])[1].tobytes())
        assert len(outcome.faces) == 1, (i, outcome.faces)
        tracks.append(outcome.faces[0].track)
    assert len(set(tracks)) == 1 and pipeline.sweep.sweeps == 1
    top, right, bottom, left = outcome.faces[0].box
    assert 250 < (left + right) / 2 < 550 and bottom - top > 80  # the large turned face in the middle


def test_cnn_is_never_given_an_image_too_small_for_it():
    """dlib's CNN dies (RuntimeError or a bus error) on images under 48 px a side; they have no findable face."""
    from recognizer.vision.detect import Detectors

    detectors = Detectors()
    assert detectors.detect_cnn(np.zeros((20, 640, 3), np.uint8)) == []
    assert detectors.sweep(np.zeros((60, 60, 3), np.uint8), scale=0.5) == []


@pytest.mark.timeout(300)
def test_process_sweeper_finds_the_turned_face_in_its_own_niced_process():
    """The server's sweeper: a real spawned process at nice 19; the caller gets a Future at once."""
    import os
    import time

    from recognizer.vision.sweep import ProcessSweeper

    frame = cv2.cvtColor(clip_frames({40})[40], cv2.COLOR_BGR2RGB)
    sweeper = ProcessSweeper(SweepParams())
    try:
        (pid,) = [p.pid for p in sweeper._pool._processes.values()]  # noqa: SLF001 - checking the priority
        assert os.getpriority(os.PRIO_PROCESS, pid) == 19
        assert sweeper.budget.try_acquire(time.monotonic())
        start = time.perf_counter()
        future = sweeper.submit(frame)
        assert time.perf_counter() - start < 0.5  # the station thread does not wait for the CNN
        boxes = future.result(timeout=240)
        assert len(boxes) == 1 and 250 < (boxes[0][1] + boxes[0][3]) / 2 < 550
    finally:
        sweeper.close()


def test_cli_flags_reach_the_sweep_settings_and_bad_values_are_refused():
    from recognizer.settings import build_parser
    from recognizer.app import RecognizerSettings

    s = RecognizerSettings.from_args(build_parser().parse_args(
        ["--detector", "hog+cnn", "--sweep-period", "3", "--sweep-budget", "0.1", "--sweep-scale", "0.5"]))
    assert s.engine.detector == "hog+cnn"
    assert (s.sweep.period_s, s.sweep.idle_period_s, s.sweep.budget, s.sweep.scale) == (3.0, 1.0, 0.1, 0.5)
    for bad in (["--detector", "mmod"], ["--sweep-budget", "2"], ["--sweep-period", "0"]):
        with pytest.raises(ValueError):
            RecognizerSettings.from_args(build_parser().parse_args(bad))


@pytest.mark.timeout(300)
def test_server_with_sweeps_boxes_the_turned_face_without_holding_frames(tmp_path, sample_index_dir):
    """A real recognizer with --detector hog+cnn on 127.0.0.1: frames of the turned face (HOG: nobody) are
    answered at once while the sweep process works; a later frame carries the face, found_by "sweep"."""
    import shutil
    import time

    from recognizer.app import RecognizerApp, RecognizerSettings
    from recognizer.server.stations import ServerConfig
    from recognizer.vision.detect import EngineConfig
    from recognizer.station.pipeline import PipelineConfig
    from tests.test_server import ask, connect

    shutil.copytree(sample_index_dir, tmp_path / "encodings")
    app = RecognizerApp(RecognizerSettings(
        server=ServerConfig(host="127.0.0.1", port=0, token="secret"), engine=EngineConfig(detector="hog+cnn"),
        pipeline=PipelineConfig(liveness=False), index_dir=tmp_path / "encodings", known_faces=tmp_path / "kf",
        workers=1))
    app.start()
    try:
        frames = clip_frames(set(range(30, 50)))
        stream, _ = connect(app)
        jpegs = [cv2.imencode(".jpg", frames[i])[1].tobytes() for i in sorted(frames)]
        replies, seq, slowest, deadline = [], 0, 0.0, time.monotonic() + 200
        while time.monotonic() < deadline:
            seq += 1
            start = time.perf_counter()
            faces = ask(stream, jpegs[seq % len(jpegs)], seq).header["faces"]
            slowest = max(slowest, time.perf_counter() - start)
            replies.append(faces)
            if any(f.get("found_by") == "sweep" for f in faces):
                break
            time.sleep(0.05)
        swept = [f for f in replies[-1] if f.get("found_by") == "sweep"]
        assert swept and seq > 1, replies[-3:]  # found by the sweep, on a frame after the one it was taken from
        assert slowest < 1.2  # no reply waited for the ~1.5-3 s CNN run
        stream.close()
    finally:
        app.stop()


class RecordingSweeper:
    """Sweeps that find nothing, at once; records when (on the pipeline's clock) each was asked for."""

    budget = None

    def __init__(self, clock):
        self.clock = clock
        self.times: list[float] = []

    def submit(self, rgb):
        self.times.append(round(self.clock(), 2))
        future = Future()
        future.set_result([])
        return future


def test_a_face_coming_in_brings_the_next_sweep_sooner(engine, tmp_path):
    """Obama at the desk, Biden comes in on frame 4 (10 frames/s): the next sweep comes `idle_period_s` after the
    last one, not a whole `period_s` (others HOG cannot see may have come with him)."""
    from recognizer.identity.index import IndexStore
    from recognizer.station.pipeline import PipelineConfig, StationPipeline
    from recognizer.vision.sweep import StationSweep
    from tests.test_regions import _frames_with_a_face_entering

    now = [0.0]
    sweeper = RecordingSweeper(lambda: now[0])
    params = SweepParams(period_s=2.5, idle_period_s=1.0)
    pipeline = StationPipeline(engine, engine, IndexStore(tmp_path), PipelineConfig(liveness=False),
                               clock=lambda: now[0], sweep=StationSweep(sweeper, params, lambda rgb, b: SlidingFollower(b, 0)))
    for i, jpeg in enumerate(_frames_with_a_face_entering(4, 20)):
        now[0] = i / 10
        pipeline.process(jpeg, annotate=False)
    assert sweeper.times == [0.0, 1.0], sweeper.times  # without the rule: [0.0] (the next at 2.5 s)
