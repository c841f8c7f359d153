"""CPU cost of one station's frame in the recognizer, per stage: the figure that depends least on the machine's load.

Runs the server's per-frame path for one station in this process, on one thread, exactly as a station's thread
runs it (the FRAME message parsed, `StationSession.receive`, the alert monitor's `on_frame`, the RESULT message
serialised), fed the frames of a real 640x480 webcam clip at the camera's rate, with the recognizer's own
defaults (hog+cnn with its sweep process, liveness on, the encoder processes). It counts CPU time of this thread
(`time.thread_time`: time spent waiting for the encoder or sweep processes, or for a core, is not counted), per
stage (time inside a stage's functions, nested stages subtracted), plus the encoder and sweep processes' CPU
per frame. Figures: mean ms per frame over the clip, min / median / max over `--runs` passes. The station asks
for RESULTs without the annotated picture, as the edge does (`--recognizer-draws`: with it; an older tree without
the option always draws).

    .venv/bin/python -m bench.frame_cost                     # defaults: 400 frames, 3 runs
    PYTHONPATH=/path/to/older/tree .venv/bin/python bench/frame_cost.py   # the same measurement on older code

The per-frame path's own thread is what limits a station's rate and, with the GIL, how well stations share
the cores; the encoder and sweep processes run beside it.
"""
from __future__ import annotations

import argparse
import functools
import logging
import os
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):  # run as a file (older tree on PYTHONPATH): bench's helpers from this file's tree
    sys.path.append(str(REPO))

import numpy as np

from bench.throughput import WEBCAM_CLIP, FALLBACK_CLIP, cpu_s, load_frames

log = logging.getLogger("bench.frame_cost")


class StageClock:
    """Exclusive thread CPU time per stage: wrapped callables charge their time to their stage, minus the time of
    stages called inside them."""

    def __init__(self) -> None:
        self.ms: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._stack: list[float] = []  # per open stage: CPU time of stages nested in it

    def wrap(self, stage: str, fn):
        @functools.wraps(fn)
        def timed(*args, **kwargs):
            self._stack.append(0.0)
            t0 = time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                spent = time.thread_time() - t0
                nested = self._stack.pop()
                self.ms[stage] += (spent - nested) * 1e3
                self.calls[stage] += 1
                if self._stack:
                    self._stack[-1] += spent
        return timed

    def patch(self, obj, attr: str, stage: str) -> None:
        """Wrap `obj.attr` (a module's function or an instance's method) if it exists in this tree."""
        fn = getattr(obj, attr, None)
        if fn is not None:
            setattr(obj, attr, self.wrap(stage, fn))


def instrument(clock: StageClock, pipeline, engine) -> None:
    """Stage timers on the per-frame path's parts (whatever of them this tree has)."""
    import cv2

    import recognizer.alerting.monitor as monitor
    import recognizer.station.pipeline as pl
    from shared import protocol

    for name, stage in (("decode_jpeg", "decode"), ("decode_frame", "decode"), ("draw_faces", "draw"),
                        ("encode_jpeg", "reply JPEG"), ("face_crop_jpeg", "review crop")):
        clock.patch(pl, name, stage)
    for name in ("cvtColor", "imdecode"):
        # cv2 functions called through the cv2 module anywhere (colour conversions; decodes outside decode_jpeg)
        setattr(cv2, name, clock.wrap("colour" if name == "cvtColor" else "decode", getattr(cv2, name)))
    clock.patch(monitor, "frame_stats", "frame stats")
    import recognizer.vision.regions as regions

    for name, stage in (("landmarks68", "landmarks"), ("chips", "chips")):
        clock.patch(engine, name, stage)
    clock.patch(pipeline, "detect", "HOG, whole frame")  # a full pass (with regions), or every frame (without)
    for name, stage in (("detect_in", "HOG, crops"), ("motion_thumb", "motion test"), ("motion_region", "motion test")):
        clock.patch(regions, name, stage)
    if pipeline.sweep is not None:
        clock.patch(pipeline.sweep, "step", "sweep followers")
    clock.patch(pipeline.tracker, "update", "track")
    clock.patch(pipeline.encoder, "encode_chips", "encode (wait)")
    if pipeline.liveness is not None:
        clock.patch(pipeline.liveness, "update", "blinks (EAR + eye CNN)")
    clock.patch(protocol, "encode", "protocol")
    clock.patch(protocol, "decode_body", "protocol")


def run_once(frames: list[bytes], fps: float, pool, sweeper, settings, engine, store, annotate: bool) -> dict:
    """One pass over the clip; ms per frame by stage, total, and the helper processes' CPU per frame."""
    from recognizer.alerting.monitor import AlertMonitor
    from recognizer.app import pipeline_factory
    from recognizer.station.session import FrameProcessed, Send, StationSession
    from recognizer.station.types import StationSnapshot
    from shared import protocol

    pipeline = pipeline_factory(settings, engine, pool, store, sweeper=sweeper)()
    import dataclasses

    extra = {"annotate": annotate} if "annotate" in {f.name for f in dataclasses.fields(StationSnapshot)} else {}
    session = StationSession(StationSnapshot(1, "bench-cost", "bench", "127.0.0.1:1", time.time(), **extra), pipeline)
    events: list = []
    monitor = AlertMonitor(settings.alerts, events.append)
    clock = StageClock()
    instrument(clock, pipeline, engine)
    wire = [protocol.encode(protocol.frame(i + 1, 0.0, jpeg)) for i, jpeg in enumerate(frames)]
    helpers = [p.pid for p in pool._pool._processes.values()]  # noqa: SLF001 (bench only)
    sweep_pids = [p.pid for p in sweeper._pool._processes.values()] if sweeper is not None else []  # noqa: SLF001
    decoder = protocol.Decoder()
    total = 0.0
    enc0, sw0 = cpu_s(helpers), cpu_s(sweep_pids)
    start = time.perf_counter()
    for i, data in enumerate(wire):
        due = start + i / fps
        if due > time.perf_counter():
            time.sleep(due - time.perf_counter())
        t0 = time.thread_time()
        decoder.feed(data)
        msg = decoder.next_message()
        for action in session.receive(msg):
            if isinstance(action, Send):
                protocol.encode(action.message)
            elif isinstance(action, FrameProcessed):
                monitor.on_frame(action.snapshot, action.outcome, action.jpeg)
        total += time.thread_time() - t0
    n = len(wire)
    out = {k: v / n for k, v in clock.ms.items()}
    out["total"] = total * 1e3 / n
    out["other (Python glue)"] = out["total"] - sum(v for k, v in clock.ms.items() if k != "encode (wait)") / n
    out["encoder processes"] = (cpu_s(helpers) - enc0) * 1e3 / n
    out["sweep process"] = (cpu_s(sweep_pids) - sw0) * 1e3 / n
    out["wall"] = (time.perf_counter() - start) * 1e3 / n
    out["calls"] = {k: v / n for k, v in clock.calls.items()}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clip", type=Path, default=WEBCAM_CLIP if WEBCAM_CLIP.exists() else FALLBACK_CLIP)
    p.add_argument("--frames", type=int, default=400)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--fps", type=float, default=30.0, help="frames fed at this camera rate (sweeps run on real time)")
    p.add_argument("--downscale", type=float, default=1.0)
    p.add_argument("--recognizer-draws", action="store_true",
                   help="the station asks for the annotated picture (HELLO annotate, as edges before issue 17); "
                        "default: the edge draws (a tree without the option always draws)")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)

    import dataclasses

    import recognizer
    from recognizer.app import RecognizerSettings
    from recognizer.identity.index import IndexStore, save_index
    from recognizer.vision.detect import FaceEngine
    from recognizer.vision.encoders import EncoderPool
    from recognizer.vision.sweep import ProcessSweeper

    try:
        from recognizer.identity.enrol import build_index
    except ModuleNotFoundError:  # pragma: no cover - an older tree
        from recognizer.identity.enroll import build_index

    frames = load_frames(args.clip, args.frames)
    tmp = Path(tempfile.mkdtemp(prefix="facemon-cost-"))
    settings = RecognizerSettings(index_dir=tmp / "encodings")
    settings = dataclasses.replace(settings, pipeline=dataclasses.replace(settings.pipeline, detect_scale=args.downscale))
    engine = FaceEngine(settings.engine)
    index, _ = build_index(engine, REPO / "known_faces")
    save_index(index, tmp / "encodings")
    store = IndexStore(tmp / "encodings")
    pool = EncoderPool(None)
    sweeper = ProcessSweeper(settings.sweep) if settings.engine.detector == "hog+cnn" else None
    print(f"code: {Path(recognizer.__file__).parents[1]}; clip {args.clip.name}, {len(frames)} frames at "
          f"{args.fps:.0f} fps, downscale {args.downscale}, detector {settings.engine.detector}, liveness "
          f"{settings.pipeline.liveness}, recognizer draws {args.recognizer_draws}; load average {os.getloadavg()[0]:.1f}", flush=True)
    runs = []
    try:
        for _ in range(args.runs):
            runs.append(run_once(frames, args.fps, pool, sweeper, settings, engine, store, args.recognizer_draws))
    finally:
        pool.close()
        if sweeper is not None:
            sweeper.close()
        shutil.rmtree(tmp, ignore_errors=True)
    calls = runs[-1].pop("calls")
    for r in runs[:-1]:
        r.pop("calls")
    keys = sorted({k for r in runs for k in r}, key=lambda k: -np.median([r.get(k, 0.0) for r in runs]))
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    print("| stage | thread CPU ms per frame, min / median / max | calls per frame |")
    print("|---|---:|---:|")
    for k in keys:
        vals = [r.get(k, 0.0) for r in runs]
        per = f"{calls[k]:.2f}" if k in calls else ""
        print(f"| {k} | {min(vals):.2f} / {float(np.median(vals)):.2f} / {max(vals):.2f} | {per} |")


if __name__ == "__main__":
    main()
