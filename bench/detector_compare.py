"""Detectors and landmarks side by side: dlib (HOG, CNN, 68 points) vs mediapipe (BlazeFace, FaceMesh), issue 17.

    /work/venv-mp/bin/python -m bench.detector_compare [--passes 3] [--webcam-frames 120] [--cnn-frames 12]

Needs a Python with both dlib (`dlib-bin`, `face_recognition_models`) and mediapipe 0.10.x with its legacy
`solutions` API, whose wheel ships the BlazeFace and FaceMesh .tflite files; the product's venv has no
mediapipe, so there the bench says so and exits 0. Nothing is downloaded: a mediapipe without bundled models
fails to load and the bench stops.

Same decoded RGB frames for every detector:

- **demo clip**: the 28 annotated frames of `samples/hamilton_clip.mp4` (640x360), scored as `bench.recall`
  scores them (`bench/data/hamilton_faces.json`, a face is boxed by IoU >= 0.3 or a box centre inside it);
- **group photos**: `../shared/data/group`, longer side <= 1024 px as in `bench.recall`; recall =
  min(found, expected) / expected summed over photos (counts, as `bench.recall`: no boxes are annotated);
- **webcam**: `--webcam-frames` frames spread evenly over `eyeblink8_concat_webcam.mp4` (640x480, the clip
  `bench.throughput` serves; one face in view): recall = frames with a box / frames, extra = boxes beyond one.

Cost is CPU ms per frame of the whole process (`time.process_time`: mediapipe runs its graph and XNNPACK on
threads of its own, which `time.thread_time` of the caller does not see; both are printed), per pass the mean
over the set's frames; min / median / max over `--passes` passes, detectors alternated inside each pass, load
average beside. BlazeFace runs once at the lowest confidence shown and its boxes are filtered by score for the
higher ones (its threshold only drops boxes after the network: the cost is the same).

Landmarks (webcam frames): dlib's 68 points on HOG's boxes and on BlazeFace's boxes (ms per face, and how far
the two sets of points are apart, in inter-ocular distances); FaceMesh (refine off) per frame in static mode
(its own BlazeFace + mesh) and in tracking mode on consecutive frames (the mesh follows the face from the last
frame's points: the per-face cost once a face is followed). EAR check on `../shared/data/blink` (96x128 clips,
upscaled 4x for both): EAR of open vs annotated closed frames, dlib 68 vs FaceMesh's six points per eye.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np

from bench.recall import CLIP, CLIP_FACES, DATA_GROUP, clip_frames, expected_count, group_photos, score
from bench.throughput import WEBCAM_CLIP
from recognizer.vision.track import iou
from shared.results import Box

log = logging.getLogger("bench.detector_compare")

THRESHOLDS = (0.3, 0.5, 0.7)  # BlazeFace min_detection_confidence values shown (0.5: mediapipe's default)
# FaceMesh's six points per eye in dlib's EAR order (outer corner, two upper lid, inner corner, two lower lid)
MESH_RIGHT_EYE = (33, 160, 158, 133, 153, 144)
MESH_LEFT_EYE = (362, 385, 387, 263, 373, 380)
BLINK_UPSCALE = 4


@dataclass(frozen=True)
class FrameSet:
    name: str
    frames: list[np.ndarray]  # RGB uint8
    scorer: Callable[[list[list[Box]]], dict]


@dataclass(frozen=True)
class Passes:
    cpu_ms: list[float]  # per pass: process CPU ms per item
    thread_ms: list[float]
    loads: list[float]

    def cell(self, values: Sequence[float]) -> str:
        return " / ".join(f"{v:.1f}" for v in (min(values), statistics.median(values), max(values)))


def timed(fn: Callable, items: Sequence) -> tuple[list, float, float]:
    """fn over every item; results, process CPU ms and calling-thread CPU ms per item. Starts after a short rest
    so that the previous block's worker threads (mediapipe's XNNPACK pool spins a while after work) are idle."""
    time.sleep(0.3)
    c0, t0 = time.process_time(), time.thread_time()
    out = [fn(x) for x in items]
    n = max(len(items), 1)
    return out, (time.process_time() - c0) / n * 1e3, (time.thread_time() - t0) / n * 1e3


# ---- scoring (pure) ----

def clip_scorer(reference: dict[int, list[Box]], order: list[int]) -> Callable[[list[list[Box]]], dict]:
    def scorer(boxes: list[list[Box]]) -> dict:
        s = score(reference, dict(zip(order, boxes)))
        return {"recall": s["recall"], "found": f"{s['boxed']}/{s['visible']}", "extra": s["extra"]}
    return scorer


def count_scorer(expected: list[int]) -> Callable[[list[list[Box]]], dict]:
    def scorer(boxes: list[list[Box]]) -> dict:
        got = [min(len(b), e) for b, e in zip(boxes, expected)]
        return {"recall": sum(got) / sum(expected), "found": f"{sum(got)}/{sum(expected)}",
                "extra": sum(max(0, len(b) - e) for b, e in zip(boxes, expected))}
    return scorer


def one_face_scorer(boxes: list[list[Box]]) -> dict:
    found = sum(bool(b) for b in boxes)
    return {"recall": found / max(len(boxes), 1), "found": f"{found}/{len(boxes)}",
            "extra": sum(max(0, len(b) - 1) for b in boxes)}


def ear6(points: np.ndarray) -> float:
    """Soukupova-Cech EAR of six (x, y) eye points in dlib's order."""
    p = np.asarray(points, np.float64)
    return float((np.linalg.norm(p[1] - p[5]) + np.linalg.norm(p[2] - p[4])) / (2 * np.linalg.norm(p[0] - p[3])))


def mesh_ear(points: np.ndarray) -> float:
    return 0.5 * (ear6(points[list(MESH_RIGHT_EYE)]) + ear6(points[list(MESH_LEFT_EYE)]))


def separation(open_ears: Sequence[float], closed_ears: Sequence[float]) -> dict:
    """Medians and AUC: the share of (open, closed) frame pairs where the open frame's EAR is the higher."""
    if not open_ears or not closed_ears:
        return {"open": float("nan"), "closed": float("nan"), "auc": float("nan")}
    o, c = np.asarray(open_ears)[:, None], np.asarray(closed_ears)[None, :]
    auc = float(((o > c).sum() + 0.5 * (o == c).sum()) / (o.size * c.size))
    return {"open": float(np.median(open_ears)), "closed": float(np.median(closed_ears)), "auc": auc}


def landmark_gap(a: np.ndarray, b: np.ndarray) -> float:
    """Mean distance between two 68-point sets, in inter-ocular distances (outer eye corners 36-45 of `a`)."""
    return float(np.linalg.norm(a - b, axis=1).mean() / np.linalg.norm(a[36] - a[45]))


# ---- frames (I/O) ----

def demo_set() -> FrameSet:
    reference = {int(k): [tuple(b) for b in v] for k, v in json.loads(CLIP_FACES.read_text())["frames"].items()}
    frames = {i: cv2.cvtColor(f, cv2.COLOR_BGR2RGB) for i, _, f in clip_frames(CLIP) if i in reference}
    order = sorted(frames)
    return FrameSet("demo clip", [frames[i] for i in order], clip_scorer(reference, order))


def group_set(folder: Path, max_side: int) -> FrameSet | None:
    if not (folder / "annotations.json").exists():
        return None
    photos = list(group_photos(folder, max_side))
    frames, expected = [rgb for _, _, rgb in photos], [expected_count(entry) for _, entry, _ in photos]
    return FrameSet("group photos", frames, count_scorer(expected))


def video_rgb(path: Path, keep: Callable[[int], bool], stop: int | None = None) -> list[np.ndarray]:
    cap, out, i = cv2.VideoCapture(str(path)), [], 0
    while stop is None or i < stop:
        ok, frame = cap.read()
        if not ok:
            break
        if keep(i):
            out.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
        i += 1
    cap.release()
    return out


def webcam_set(count: int) -> FrameSet | None:
    if not WEBCAM_CLIP.exists():
        return None
    total = int(cv2.VideoCapture(str(WEBCAM_CLIP)).get(cv2.CAP_PROP_FRAME_COUNT))
    step = max(1, total // count)
    frames = video_rgb(WEBCAM_CLIP, lambda i: i % step == 0)[:count]
    return FrameSet("webcam", frames, one_face_scorer)


# ---- detectors ----

def blaze(detector, rgb: np.ndarray) -> list[tuple[Box, float]]:
    h, w = rgb.shape[:2]
    out = []
    for d in detector.process(rgb).detections or []:
        r = d.location_data.relative_bounding_box
        left, top = max(0, int(r.xmin * w)), max(0, int(r.ymin * h))
        right, bottom = min(w, int((r.xmin + r.width) * w)), min(h, int((r.ymin + r.height) * h))
        if right > left and bottom > top:
            out.append(((top, right, bottom, left), float(d.score[0])))
    return out


def mesh_points(mesh, rgb: np.ndarray) -> list[np.ndarray]:
    h, w = rgb.shape[:2]
    found = mesh.process(rgb).multi_face_landmarks or []
    return [np.array([(p.x * w, p.y * h) for p in f.landmark], np.float64) for f in found]


def run_detectors(sets: list[FrameSet], detectors: dict[str, Callable], passes: int) -> dict:
    """{(set, detector): (Passes, boxes of the first pass)}; detectors alternate inside each pass."""
    cost: dict = {}
    for p in range(passes):
        for fs in sets:
            for name, fn in detectors.items():
                load = os.getloadavg()[0]
                out, cpu, thr = timed(fn, fs.frames)
                prev = cost.setdefault((fs.name, name), (Passes([], [], []), out))
                prev[0].cpu_ms.append(cpu)
                prev[0].thread_ms.append(thr)
                prev[0].loads.append(load)
        log.warning("pass %d of %d done (load %.1f)", p + 1, passes, os.getloadavg()[0])
    return cost


def with_cnn(boxes: list[list[Box]], cnn: list[list[Box]]) -> list[list[Box]]:
    """Per frame, a detector's boxes plus the CNN's that overlap none of them (IoU < 0.3), as bench.recall adds
    a sweep's faces to HOG's: what the detector would report once a CNN sweep ran on that frame."""
    return [a + [c for c in cs if all(iou(c, b) < 0.3 for b in a)] for a, cs in zip(boxes, cnn)]


def detector_table(sets: list[FrameSet], cost: dict, cnn: dict) -> None:
    print("| set | detector | recall | found | extra | CPU ms/frame min / med / max | caller-thread ms (med) | load |")
    print("|---|---|---:|---:|---:|---:|---:|---|")
    for fs in sets:
        unions = []
        for (set_name, name), (passes, out) in cost.items():
            if set_name != fs.name:
                continue
            variants = ([(f"{name} >= {t}", [[b for b, s in o if s >= t] for o in out]) for t in THRESHOLDS]
                        if name.startswith("BlazeFace") else [(name, out)])
            for label, boxes in variants:
                s = fs.scorer(boxes)
                print(f"| {fs.name} | {label} | {s['recall']:.0%} | {s['found']} | {s['extra']} | "
                      f"{passes.cell(passes.cpu_ms)} | {statistics.median(passes.thread_ms):.1f} | "
                      f"{min(passes.loads):.1f}-{max(passes.loads):.1f} |")
                whole = fs.name in cnn and cnn[fs.name][2] == len(fs.frames)
                if whole and (label.endswith("0.5") or "HOG up0" in label):
                    unions.append((label, with_cnn(boxes, cnn[fs.name][0])))
        if fs.name in cnn:
            boxes, ms, n, load = cnn[fs.name]
            s = (fs.scorer if n == len(fs.frames) else one_face_scorer)(boxes)
            print(f"| {fs.name} | dlib CNN up0 ({n} frames, 1 pass) | {s['recall']:.0%} | {s['found']} | "
                  f"{s['extra']} | {ms:.0f} | | {load:.1f} |")
            for label, boxes in unions:
                s = fs.scorer(boxes)
                print(f"| {fs.name} | {label} + CNN's other faces | {s['recall']:.0%} | {s['found']} | {s['extra']} | "
                      f"| | |")
    print()


def landmarks(engine, frames: list[np.ndarray], hog: list[list[Box]], blazed: list[list[tuple[Box, float]]],
              mp_solutions, passes: int, track_frames: list[np.ndarray]) -> None:
    """Per-face landmark cost on the webcam frames, and how far dlib's points move on BlazeFace's boxes."""
    pairs = [(f, h[0], b[0][0]) for f, h, b in zip(frames, hog, blazed) if h and b]
    if not pairs:
        print("no webcam frame with both a HOG and a BlazeFace box: landmarks skipped\n")
        return
    rows: dict[str, Passes] = {}
    mesh_static = mp_solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1, refine_landmarks=False)
    found = {}
    for _ in range(passes):
        load = os.getloadavg()[0]
        for label, fn, items in (
                ("dlib 68 on HOG boxes (per face)", lambda x: engine.landmarks68(x[0], [x[1]])[0], pairs),
                ("dlib 68 on BlazeFace boxes (per face)", lambda x: engine.landmarks68(x[0], [x[2]])[0], pairs),
                ("FaceMesh static: BlazeFace + mesh (per frame)", lambda x: mesh_points(mesh_static, x[0]), pairs)):
            out, cpu, thr = timed(fn, items)
            found.setdefault(label, out)
            r = rows.setdefault(label, Passes([], [], []))
            r.cpu_ms.append(cpu), r.thread_ms.append(thr), r.loads.append(load)
        # tracking mode needs consecutive frames and a fresh graph per pass (the first frame runs the detector)
        with mp_solutions.face_mesh.FaceMesh(static_image_mode=False, max_num_faces=1, refine_landmarks=False) as m:
            out, cpu, thr = timed(lambda f: mesh_points(m, f), track_frames)
        label = f"FaceMesh tracking, {len(track_frames)} consecutive frames (per frame)"
        found.setdefault(label, out)
        r = rows.setdefault(label, Passes([], [], []))
        r.cpu_ms.append(cpu), r.thread_ms.append(thr), r.loads.append(load)
    mesh_static.close()
    print(f"Landmarks on the webcam frames ({len(pairs)} frames with a HOG and a BlazeFace box; one face)\n")
    print("| landmarks | faces found | CPU ms min / med / max | caller-thread ms (med) | load |")
    print("|---|---:|---:|---:|---|")
    for label, r in rows.items():
        n = len(found[label])
        got = sum(1 for x in found[label] if len(x)) if "FaceMesh" in label else n
        print(f"| {label} | {got}/{n} | {r.cell(r.cpu_ms)} | {statistics.median(r.thread_ms):.1f} | "
              f"{min(r.loads):.1f}-{max(r.loads):.1f} |")
    print()


def box_gaps(engine, frames: list[np.ndarray], hog: list[list[Box]],
             blazed: list[list[tuple[Box, float]]]) -> list[float]:
    """Per face that HOG and BlazeFace both box (IoU >= 0.3): how far dlib's 68 points on the BlazeFace box are
    from those on the HOG box, in inter-ocular distances."""
    gaps = []
    for f, hs, bs in zip(frames, hog, blazed):
        for h in hs:
            best = max((b for b, _ in bs), key=lambda b: iou(h, b), default=None)
            if best is not None and iou(h, best) >= 0.3:
                a, c = engine.landmarks68(f, [h, best])
                gaps.append(landmark_gap(a, c))
    return gaps


def ear_check(engine, mp_solutions, folder: Path) -> None:
    notes_path = folder / "annotations.json"
    if not notes_path.exists():
        print(f"no blink clips at {folder}: EAR check skipped\n")
        return
    from recognizer.liveness.blinks import face_ear

    notes = json.loads(notes_path.read_text())
    print(f"EAR on {folder.name}/ clips (frames upscaled {BLINK_UPSCALE}x; open = more than 2 frames from a closed "
          "range): median open / median closed / AUC (open above closed)\n")
    print("| clip | landmarks | frames with points | open | closed | AUC |")
    print("|---|---|---:|---:|---:|---:|")
    for name, entry in sorted(notes.items()):
        if name.startswith("_"):
            continue
        frames = [cv2.resize(f, None, fx=BLINK_UPSCALE, fy=BLINK_UPSCALE, interpolation=cv2.INTER_CUBIC)
                  for f in video_rgb(folder / name, lambda i: True)]
        closed = {i for e in entry["events"] for i in range(e["closed"][0], e["closed"][1] + 1)}
        near = {j for i in closed for j in range(i - 2, i + 3)}
        dlib_ear: dict[int, float] = {}
        for i, f in enumerate(frames):
            boxes = engine.detect_hog(f, 0)
            if boxes:
                dlib_ear[i] = face_ear(engine.landmarks68(f, boxes[:1])[0])
        mesh_ear_by: dict[int, float] = {}
        with mp_solutions.face_mesh.FaceMesh(static_image_mode=False, max_num_faces=1, refine_landmarks=False) as m:
            for i, f in enumerate(frames):
                pts = mesh_points(m, f)
                if pts:
                    mesh_ear_by[i] = mesh_ear(pts[0])
        for label, ears in (("dlib 68 (HOG box)", dlib_ear), ("FaceMesh (tracking)", mesh_ear_by)):
            s = separation([e for i, e in ears.items() if i not in near], [e for i, e in ears.items() if i in closed])
            print(f"| {name} | {label} | {len(ears)}/{len(frames)} | {s['open']:.3f} | {s['closed']:.3f} | "
                  f"{s['auc']:.2f} |")
    print()


def crop_hog(engine, frames: list[np.ndarray], hog: list[list[Box]], passes: int) -> None:
    """HOG up0 on the crop the product searches around a followed face (recognizer.vision.regions defaults)."""
    from recognizer.vision.regions import RegionParams, region_around

    crops = []
    for f, boxes in zip(frames, hog):
        if boxes:
            r = region_around(boxes[0], *f.shape[:2], RegionParams())
            crop = f[r.top:r.bottom, r.left:r.right]
            crops.append(cv2.resize(crop, None, fx=r.scale, fy=r.scale, interpolation=cv2.INTER_AREA)
                         if r.scale < 1.0 else np.ascontiguousarray(crop))
    cost = Passes([], [], [])
    for _ in range(passes):
        cost.loads.append(os.getloadavg()[0])
        out, cpu, thr = timed(lambda c: engine.detect_hog(c, 0), crops)
        cost.cpu_ms.append(cpu), cost.thread_ms.append(thr)
    print(f"dlib HOG up0 on the product's crop around the face ({len(crops)} webcam frames): CPU ms "
          f"{cost.cell(cost.cpu_ms)}, face found on {sum(bool(o) for o in out)}/{len(out)} crops, "
          f"load {min(cost.loads):.1f}-{max(cost.loads):.1f}\n")


def gap_report(engine, sets: list[FrameSet], cost: dict) -> None:
    print("dlib 68 points on BlazeFace short-range boxes vs on HOG up0 boxes, faces both boxed: gap in inter-ocular "
          "distances (mean over the 68 points), median / max\n")
    for fs in sets:
        hog, blazed = cost[(fs.name, "dlib HOG up0")][1], cost[(fs.name, "BlazeFace short (0)")][1]
        gaps = box_gaps(engine, fs.frames, hog, blazed)
        if gaps:
            print(f"- {fs.name}: {np.median(gaps):.3f} / {max(gaps):.3f} over {len(gaps)} faces")
    print()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--passes", type=int, default=3)
    p.add_argument("--webcam-frames", type=int, default=120, help="frames spread evenly over the webcam clip")
    p.add_argument("--track-frames", type=int, default=120, help="consecutive webcam frames for FaceMesh tracking")
    p.add_argument("--cnn-frames", type=int, default=12,
                   help="webcam frames for dlib's CNN, one pass (it also runs on every clip frame and photo; 0: no CNN)")
    p.add_argument("--max-side", type=int, default=1024)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    if args.passes < 1 or args.webcam_frames < 1:
        raise SystemExit("--passes and --webcam-frames must be >= 1")
    try:
        from mediapipe import solutions as mp_solutions
    except ImportError as exc:
        print(f"mediapipe is not installed in this Python ({exc}): nothing to compare. Run it with a venv that has "
              "mediapipe 0.10.x and dlib, e.g. /work/venv-mp/bin/python -m bench.detector_compare")
        return
    from recognizer.vision.detect import EngineConfig, FaceEngine

    engine = FaceEngine(EngineConfig(detector="hog+cnn"))
    fd = {m: mp_solutions.face_detection.FaceDetection(model_selection=m, min_detection_confidence=min(THRESHOLDS))
          for m in (0, 1)}
    sets = [s for s in (demo_set(), group_set(DATA_GROUP, args.max_side), webcam_set(args.webcam_frames)) if s]
    detectors = {"dlib HOG up0": lambda f: engine.detect_hog(f, 0), "dlib HOG up1": lambda f: engine.detect_hog(f, 1),
                 "BlazeFace short (0)": lambda f: blaze(fd[0], f), "BlazeFace full (1)": lambda f: blaze(fd[1], f)}
    print(f"# Detectors side by side (load average {os.getloadavg()[0]:.1f} at start, {os.cpu_count()} CPUs)\n")
    cost = run_detectors(sets, detectors, args.passes)

    cnn = {}
    if args.cnn_frames > 0:
        for fs in sets:  # every frame of the clip and the photos, a subset of the webcam frames
            frames = fs.frames if fs.name != "webcam" else fs.frames[:: max(1, len(fs.frames) // args.cnn_frames)]
            load = os.getloadavg()[0]
            out, cpu, _ = timed(lambda f: engine.detect_cnn(f, 0), frames)
            cnn[fs.name] = (out, cpu, len(frames), load)
    detector_table(sets, cost, cnn)

    webcam = next((s for s in sets if s.name == "webcam"), None)
    if webcam is not None:
        hog = cost[("webcam", "dlib HOG up0")][1]
        crop_hog(engine, webcam.frames, hog, args.passes)
        track = video_rgb(WEBCAM_CLIP, lambda i: True, stop=args.track_frames)
        landmarks(engine, webcam.frames, hog, cost[("webcam", "BlazeFace short (0)")][1], mp_solutions,
                  args.passes, track)
    gap_report(engine, sets, cost)
    for d in fd.values():
        d.close()
    ear_check(engine, mp_solutions, DATA_GROUP.parent / "blink")
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
