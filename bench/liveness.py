"""Liveness bench: blinks found/missed/invented per method, replay behaviour, CNN accuracies, cost.

    .venv/bin/python -m bench.liveness [--data ../shared/data] [--stretch 900]

Prints Markdown tables (copied into docs/liveness.md). Needs ../shared/data (or $FACEMON_DATA).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import cv2
import dlib
import numpy as np

from recognizer.liveness.blinks import FaceLiveness, LivenessParams
from recognizer.liveness.eyes import EyeStateModel, extract_eye_patches
from recognizer.vision.dlib_models import FACE_LANDMARKS_68, model_path

log = logging.getLogger(__name__)
METHODS = ("ear", "cnn", "both")
REPO = Path(__file__).resolve().parents[1]


def default_data() -> Path:
    """$FACEMON_DATA, else ../shared/data beside the repository."""
    return Path(os.environ.get("FACEMON_DATA") or (REPO / ".." / "shared" / "data")).resolve()


@dataclass
class Frame:
    """One decoded frame with the largest face's 68 landmarks (None when no face was found)."""

    index: int
    t: float
    gray: np.ndarray
    points: Optional[np.ndarray]


class Landmarker:
    """dlib HOG detector + 68-point predictor on the largest face of a frame."""

    def __init__(self) -> None:
        self.detector = dlib.get_frontal_face_detector()
        self.predictor = dlib.shape_predictor(str(model_path(FACE_LANDMARKS_68)))

    def frames(self, path: Path, max_frames: Optional[int] = None) -> Iterator[Frame]:
        """Decode `path`, finding the face (upsampling small frames) and its landmarks."""
        cap = cv2.VideoCapture(str(path))
        fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
        i = 0
        try:
            while max_frames is None or i < max_frames:
                ok, bgr = cap.read()
                if not ok:
                    break
                gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
                upsample = 2 if max(gray.shape) < 200 else 0
                rects = self.detector(gray, upsample)
                pts = None
                if rects:
                    shape = self.predictor(gray, max(rects, key=lambda r: r.area()))
                    pts = np.array([(p.x, p.y) for p in shape.parts()], np.float64)
                yield Frame(i, i / fps, gray, pts)
                i += 1
        finally:
            cap.release()


@dataclass
class Run:
    """Blink frames (the frame each blink was reported on) per method for one clip."""

    frames: int = 0
    faces: int = 0
    blinks: Dict[str, List[int]] = field(default_factory=lambda: {m: [] for m in METHODS})
    last_state: Dict[str, str] = field(default_factory=dict)
    ear: List[float] = field(default_factory=list)
    p_closed: List[float] = field(default_factory=list)


def run_clip(lm: Landmarker, path: Path, model: EyeStateModel, params: LivenessParams,
             max_frames: Optional[int] = None) -> Run:
    """Feed every method with the clip's landmarks; record the frame of each reported blink."""
    lives = {m: FaceLiveness(params, model, method=m) for m in METHODS}
    run = Run()
    for fr in lm.frames(path, max_frames):
        run.frames += 1
        if fr.points is None:
            continue
        run.faces += 1
        for m, live in lives.items():
            before = live._tracks[0].blinks if 0 in live._tracks else 0
            res = live.update(0, fr.t, fr.points, fr.gray)
            if res.blinks > before:
                run.blinks[m].append(fr.index)
            run.last_state[m] = res.state.value
            if m == "both":
                run.ear.append(res.ear if res.ear is not None else float("nan"))
                run.p_closed.append(res.closed_prob if res.closed_prob is not None else float("nan"))
    return run


def score(reported: Sequence[int], events: Sequence[Tuple[int, int]], tol: int = 2) -> Tuple[int, int, int]:
    """(found, missed, invented): a blink reported on its re-open frame f matches [a, b] if a <= f <= b+1+tol."""
    used = set()
    found = 0
    for a, b in events:
        hit = next((f for f in reported if f not in used and a <= f <= b + 1 + tol), None)
        if hit is not None:
            used.add(hit)
            found += 1
    return found, len(events) - found, len([f for f in reported if f not in used])


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def bench_blink_clips(lm: Landmarker, data: Path, model: EyeStateModel, params: LivenessParams) -> str:
    """Blinks found / missed / invented per method on ../shared/data/blink."""
    ann = json.loads((data / "blink" / "annotations.json").read_text())
    totals = {m: [0, 0, 0] for m in METHODS}
    rows = []
    for clip, meta in ann.items():
        if clip.startswith("_"):
            continue
        events = [tuple(e["closed"]) for e in meta["events"] if e["type"] == "blink"]
        run = run_clip(lm, data / "blink" / clip, model, params)
        for m in METHODS:
            f, mi, inv = score(run.blinks[m], events)
            totals[m] = [x + y for x, y in zip(totals[m], (f, mi, inv))]
            rows.append((clip, m, len(events), f, mi, inv, run.blinks[m]))
    rows += [("**total**", m, sum(totals[m][:2]), *totals[m], "") for m in METHODS]
    return table(("clip", "method", "annotated", "found", "missed", "invented", "reported on frames"), rows)


def bench_videos(lm: Landmarker, data: Path, model: EyeStateModel, params: LivenessParams, stretch: int) -> str:
    """What each method says on the live / phone-replay pair and a webcam stretch."""
    clips = [("spoof/video/real/apfol_real2.webm", "live person", None),
             ("spoof/video/fake/apfol_fake2.webm", "phone replay of that person", None),
             ("video/eyeblink8_concat_webcam.mp4", f"webcam, first {stretch} frames", stretch)]
    rows = []
    for rel, what, limit in clips:
        path = data / rel
        if not path.exists():
            continue
        run = run_clip(lm, path, model, params, limit)
        secs = run.frames / 30.0
        for m in METHODS:
            rows.append((Path(rel).name, what, f"{run.faces}/{run.frames}", m, len(run.blinks[m]),
                         f"{60 * len(run.blinks[m]) / secs:.0f}", run.last_state.get(m, "-"),
                         run.blinks[m][:12]))
        ear = np.array(run.ear)
        pc = np.array(run.p_closed)
        log.info("%s: EAR median %.3f p5 %.3f; P(closed) median %.3f p95 %.3f", rel,
                 np.nanmedian(ear), np.nanpercentile(ear, 5), np.nanmedian(pc), np.nanpercentile(pc, 95))
    return table(("clip", "what", "faces/frames", "method", "blinks", "per min", "state at end",
                  "blink frames (first 12)"), rows)


def tilted_photo_frames(photo: Path, seconds: float = 12.0, fps: float = 25.0) -> Iterator[Tuple[float, np.ndarray]]:
    """A still photo (derived footage) flexed/tilted about its horizontal axis: quick dips and a slow sway.

    Vertical foreshortening by cos(tilt) lowers EAR as a blink does; tilt dips to 35-45 degrees and back
    within 0.2-0.4 s every 2 s, plus a slow 25-degree sway and 1-px shake, at 640x480.
    """
    img = cv2.imread(str(photo), cv2.IMREAD_GRAYSCALE)
    scale = 400.0 / max(img.shape)
    img = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    canvas = np.full((480, 640), 128, np.uint8)
    h, w = img.shape
    y0, x0 = (480 - h) // 2, (640 - w) // 2
    canvas[y0:y0 + h, x0:x0 + w] = img
    rng = np.random.default_rng(0)
    for i in range(int(seconds * fps)):
        t = i / fps
        phase = t % 2.0
        dip = 0.0
        dur = 0.2 + 0.1 * (int(t / 2.0) % 3)
        if 1.0 <= phase < 1.0 + dur:
            dip = (35 + 5 * (int(t / 2.0) % 3)) * np.sin(np.pi * (phase - 1.0) / dur)
        tilt = np.radians(dip + 25 * max(0.0, np.sin(2 * np.pi * t / 6.0)) * (t > 6))
        m = np.float32([[1, 0, rng.normal(0, 1)], [0, np.cos(tilt), 240 * (1 - np.cos(tilt)) + rng.normal(0, 1)]])
        yield t, cv2.warpAffine(canvas, m, (640, 480), borderValue=128)


def bench_photo_attack(lm: Landmarker, data: Path, model: EyeStateModel, params: LivenessParams) -> str:
    """Blinks each method invents on a tilted still photo (every reported blink is false)."""
    photos = sorted((data / "faces").glob("*/ageitgey_*.jpg"))[:4]
    rows = []
    for photo in photos:
        lives = {m: FaceLiveness(params, model, method=m) for m in METHODS}
        faces = frames = 0
        for t, gray in tilted_photo_frames(photo):
            frames += 1
            rects = lm.detector(gray, 0)
            if not rects:
                continue
            faces += 1
            shape = lm.predictor(gray, max(rects, key=lambda r: r.area()))
            pts = np.array([(p.x, p.y) for p in shape.parts()], np.float64)
            res = {m: live.update(0, t, pts, gray) for m, live in lives.items()}
        rows.append((photo.name, f"{faces}/{frames}", *(res[m].blinks for m in METHODS),
                     *(res[m].state.value for m in METHODS)))
    return table(("photo (tilted, 12 s)", "faces/frames", *(f"invented blinks {m}" for m in METHODS),
                  *(f"state {m}" for m in METHODS)), rows)


def bench_cew(data: Path, model: EyeStateModel) -> str:
    """Eye-state CNN accuracy on the subjects train_eyes held out (same split, same seed)."""
    from recognizer.tools.train_eyes import group_split, load_cew  # no TensorFlow at module level

    x, y, groups = load_cew(data / "eyes")
    rows = []
    manifest = model.net.manifest
    test = group_split(groups, 0.2, int(manifest.get("seed", 0)))
    for name, mask in (("held-out subjects (20%)", test), ("training subjects (80%)", ~test)):
        p = model.predict_closed(x[mask])
        pred = p > 0.5
        yy = y[mask] > 0.5
        rows.append((name, int(mask.sum()), f"{np.mean(pred == yy):.3f}",
                     f"{np.mean(pred[~yy] == 0):.3f}", f"{np.mean(pred[yy]):.3f}"))
    return table(("split", "patches", "accuracy", "open recall", "closed recall"), rows)


def bench_cost(lm: Landmarker, data: Path, model: EyeStateModel, params: LivenessParams, n: int = 150) -> str:
    """Milliseconds per face per frame: 68 landmarks, EAR, CNN (patches + net), both."""
    frames = [fr for fr in lm.frames(data / "spoof/video/real/apfol_real2.webm", n) if fr.points is not None]
    rows = []
    # the 68-point predictor (the pipeline may already run it for other reasons)
    rect = dlib.rectangle(*[int(v) for v in (*frames[0].points.min(0), *frames[0].points.max(0))])
    t0 = time.perf_counter()
    for fr in frames:
        lm.predictor(fr.gray, rect)
    rows.append(("dlib 68 landmarks (input to all methods)", f"{1e3 * (time.perf_counter() - t0) / len(frames):.2f}"))
    t0 = time.perf_counter()
    for fr in frames:
        extract_eye_patches(fr.gray, fr.points)
    rows.append(("eye patches only", f"{1e3 * (time.perf_counter() - t0) / len(frames):.3f}"))
    patches = np.concatenate([extract_eye_patches(fr.gray, fr.points) for fr in frames[:8]])
    t0 = time.perf_counter()
    for _ in range(50):
        model.predict_closed(patches)
    rows.append((f"CNN batched, {len(patches)} eyes (per face)", f"{1e3 * (time.perf_counter() - t0) / 50 / (len(patches) / 2):.3f}"))
    for m in METHODS:
        live = FaceLiveness(params, model, method=m)
        t0 = time.perf_counter()
        for fr in frames:
            live.update(0, fr.t, fr.points, fr.gray)
        rows.append((f"FaceLiveness.update, method={m}", f"{1e3 * (time.perf_counter() - t0) / len(frames):.3f}"))
    return table(("step (640x480 frame, one face)", "ms per face per frame"), rows)


def _video_crops(lm: Landmarker, path: Path, every: int, limit: int) -> List[np.ndarray]:
    """Face crops (dlib box + 10%) from every `every`-th frame of a video, up to `limit` frames."""
    from recognizer.tools.antispoof import crop_face

    cap = cv2.VideoCapture(str(path))
    crops, i = [], 0
    while i < limit:
        ok, bgr = cap.read()
        if not ok:
            break
        if i % every == 0:
            rects = lm.detector(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY), 0)
            if rects:
                r = max(rects, key=lambda r: r.area())
                crops.append(crop_face(bgr, (r.left(), r.top(), r.right(), r.bottom())))
        i += 1
    cap.release()
    return crops


def bench_antispoof(lm: Landmarker, data: Path) -> str:
    """Shipped anti-spoof model on its training crops, its source videos, another person, a photo."""
    from recognizer.tools.antispoof import SpoofModel, crop_face
    from recognizer.tools.train_antispoof import load_spoof

    model = SpoofModel.load()
    crops, y, _ = load_spoof(data / "spoof")
    sets = [("training crops (in-sample; same person)", crops, y)]
    for rel, label in (("spoof/video/real/apfol_real2.webm", 1), ("spoof/video/fake/apfol_fake2.webm", 0)):
        c = _video_crops(lm, data / rel, 5, 10_000)
        sets.append((f"{Path(rel).name} (same person, our crops)", c, np.full(len(c), label)))
    c = _video_crops(lm, data / "video/eyeblink8_concat_webcam.mp4", 15, 1956)
    sets.append(("eyeblink8 webcam (other person, live)", c, np.ones(len(c))))
    photo_crops = []
    for photo in sorted((data / "faces").glob("*/ageitgey_*.jpg"))[:4]:
        for k, (_, gray) in enumerate(tilted_photo_frames(photo, seconds=4)):
            if k % 10:
                continue
            rects = lm.detector(gray, 0)
            if rects:
                r = max(rects, key=lambda r: r.area())
                bgr = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
                photo_crops.append(crop_face(bgr, (r.left(), r.top(), r.right(), r.bottom())))
    sets.append(("tilted still photos (other people, spoof)", photo_crops, np.zeros(len(photo_crops))))
    rows = []
    for name, c, lab in sets:
        pred = model.predict_real(c) > 0.5
        lab = np.asarray(lab) > 0.5
        rec_r = f"{np.mean(pred[lab]):.2f}" if lab.any() else "-"
        rec_f = f"{np.mean(~pred[~lab]):.2f}" if (~lab).any() else "-"
        rows.append((name, len(c), f"{np.mean(pred == lab):.2f}", rec_r, rec_f))
    manifest = model.net.manifest
    rows.append(("temporal hold-out (train early frames, test later; train_antispoof)", 50,
                 manifest.get("temporal_heldout_accuracy", "-"), "-", "-"))
    return table(("crops", "n", "accuracy", "real called real", "fake called fake"), rows)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run every liveness measurement and print the tables."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=default_data())
    ap.add_argument("--stretch", type=int, default=900, help="frames of eyeblink8 to run (default 900 = 30 s)")
    ap.add_argument("--only", choices=("blink", "video", "photo", "cew", "cost", "spoof"), action="append")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not args.data.is_dir():
        log.error("no test data at %s (set FACEMON_DATA)", args.data)
        return 2
    lm = Landmarker()
    model = EyeStateModel.load()
    params = LivenessParams()
    parts = {
        "blink": ("Blink detection on ../shared/data/blink", lambda: bench_blink_clips(lm, args.data, model, params)),
        "video": ("Live vs phone replay, and a webcam stretch",
                  lambda: bench_videos(lm, args.data, model, params, args.stretch)),
        "photo": ("Photo attack (derived): a still photo tilted about its horizontal axis",
                  lambda: bench_photo_attack(lm, args.data, model, params)),
        "cew": ("Eye-state CNN on CEW", lambda: bench_cew(args.data, model)),
        "cost": ("Cost per face per frame", lambda: bench_cost(lm, args.data, model, params)),
        "spoof": ("Passive anti-spoof", lambda: bench_antispoof(lm, args.data)),
    }
    for key, (title, fn) in parts.items():
        if args.only and key not in args.only:
            continue
        print(f"\n### {title}\n\n{fn()}\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
