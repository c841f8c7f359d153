"""Detection recall: HOG, CNN and hog+cnn (HOG every frame + CNN sweeps) on group photos and the demo clip.

    python -m bench.recall [--max-side 1024] [--skip-photos]

**Group photos** (`../shared/data/group`, expected counts from its annotations.json; "about 7" counts as 7):
faces found per photo, recall = min(found, expected) / expected summed over photos. hog+cnn on a still
photo is what the pipeline reports once a sweep ran: per-frame HOG plus the sweep's new faces.

**Demo clip** (`samples/hamilton_clip.mp4`, 275 frames): every frame goes through the recognizer's own
per-frame pipeline (`pipeline_factory`, liveness off unless `--liveness`, sweeps inline on clip time as in
facemon-replay; with liveness on, faces are followed by their landmarks between HOG searches, as the server does);
on every 10th frame its boxes are compared with the faces annotated by eye in
`bench/data/hamilton_faces.json`. A face counts as boxed when a box overlaps it (IoU >= 0.3) or has its
centre inside it; boxes matching no annotated face are counted as extra. "CNN every frame" runs dlib's CNN
alone on the annotated frames (what `--detector cnn` does on a GPU).
"""
from __future__ import annotations

import argparse
import json
import logging
import re
import tempfile
import time
from pathlib import Path

import cv2

from recognizer.vision.track import iou
from shared.results import Box

REPO = Path(__file__).resolve().parents[1]
DATA_GROUP = Path(__file__).resolve().parents[2] / "shared" / "data" / "group"
CLIP = REPO / "samples" / "hamilton_clip.mp4"
CLIP_FACES = REPO / "bench" / "data" / "hamilton_faces.json"

log = logging.getLogger("bench.recall")


def expected_count(entry: dict) -> int:
    """The annotated visible face count ("about 7 (...)" -> 7)."""
    value = entry["visible_faces"]
    return value if isinstance(value, int) else int(re.search(r"\d+", str(value)).group())


def boxed(ref: Box, boxes: list[Box]) -> bool:
    """A reference face is boxed when a box overlaps it by IoU >= 0.3 or has its centre inside it."""
    for b in boxes:
        cy, cx = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
        if iou(ref, b) >= 0.3 or (ref[0] <= cy <= ref[2] and ref[3] <= cx <= ref[1]):
            return True
    return False


def group_photos(folder: Path, max_side: int):
    """(name, annotation, RGB) per annotated group photo, resized so its longer side is at most `max_side`."""
    notes = json.loads((folder / "annotations.json").read_text())
    for name, entry in sorted(notes.items()):
        if name.startswith("_"):
            continue
        bgr = cv2.imread(str(folder / name))
        scale = min(1.0, max_side / max(bgr.shape[:2]))
        if scale < 1.0:
            bgr = cv2.resize(bgr, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        yield name, entry, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def photo_recall(engine, folder: Path, max_side: int) -> list[dict]:
    """Faces found per group photo by each detector."""
    rows = []
    for name, entry, rgb in group_photos(folder, max_side):
        hog0 = engine.detect_hog(rgb, 0)
        t = time.perf_counter()
        cnn = engine.detect_cnn(rgb, 0)
        cnn_s = time.perf_counter() - t
        sweep = engine.sweep(rgb)
        both = hog0 + [b for b in sweep if all(iou(b, h) < 0.3 for h in hog0)]
        rows.append({"photo": name, "size": f"{rgb.shape[1]}x{rgb.shape[0]}", "expected": expected_count(entry),
                     "hog": len(hog0), "hog_up1": len(engine.detect_hog(rgb, 1)), "cnn": len(cnn),
                     "hog+cnn": len(both), "cnn_s": cnn_s})
    return rows


def clip_frames(path: Path):
    cap = cv2.VideoCapture(str(path))
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    i = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        yield i, i / fps, frame
        i += 1
    cap.release()


def clip_boxes(detector: str, index_dir: Path, engine, liveness: bool = False) -> tuple[dict[int, list[Box]], float, int]:
    """Boxes the pipeline reports per frame of the clip with `detector`; also mean ms per frame and sweeps run."""
    from recognizer.app import RecognizerSettings, pipeline_factory
    from recognizer.identity.index import IndexStore
    from recognizer.tools.replay import ClipClock
    from recognizer.vision.detect import EngineConfig
    from recognizer.station.pipeline import PipelineConfig

    settings = RecognizerSettings(engine=EngineConfig(detector=detector), pipeline=PipelineConfig(liveness=liveness),
                                  index_dir=index_dir)
    clock = ClipClock()
    pipeline = pipeline_factory(settings, engine, engine, IndexStore(index_dir), clock=clock)()
    out, busy = {}, 0.0
    for i, t, frame in clip_frames(CLIP):
        clock.t = t
        jpeg = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 80])[1].tobytes()
        start = time.perf_counter()
        outcome = pipeline.process(jpeg)
        busy += time.perf_counter() - start
        out[i] = [f.box for f in outcome.faces]
    sweeps = pipeline.sweep.sweeps if pipeline.sweep is not None else 0
    return out, busy / max(len(out), 1) * 1e3, sweeps


def score(reference: dict[int, list[Box]], boxes: dict[int, list[Box]]) -> dict:
    visible = found = extra = 0
    missed = []
    for i, refs in sorted(reference.items()):
        got = boxes.get(i, [])
        visible += len(refs)
        hits = sum(boxed(r, got) for r in refs)
        found += hits
        missed += [i] * (len(refs) - hits)
        extra += sum(not boxed(b, refs) and not any(boxed(r, [b]) for r in refs) for b in got)
    return {"visible": visible, "boxed": found, "recall": found / max(visible, 1), "extra": extra, "missed": missed}


def clip_recall(engine_hog, engine_both, index_dir: Path, liveness: bool = False) -> list[dict]:
    reference = {int(k): [tuple(b) for b in v] for k, v in json.loads(CLIP_FACES.read_text())["frames"].items()}
    rows = []
    for name, detector, engine in (("hog (today)", "hog", engine_hog), ("hog+cnn", "hog+cnn", engine_both)):
        boxes, ms, sweeps = clip_boxes(detector, index_dir, engine, liveness)
        rows.append({"mode": name, **score(reference, boxes), "ms_per_frame": ms, "sweeps": sweeps})
    cnn = {}
    start = time.perf_counter()
    for i, _, frame in clip_frames(CLIP):
        if i in reference:
            cnn[i] = engine_both.detect_cnn(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), 0)
    ms = (time.perf_counter() - start) / len(cnn) * 1e3
    rows.append({"mode": "cnn every frame (detector only)", **score(reference, cnn), "ms_per_frame": ms, "sweeps": None})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--group", type=Path, default=DATA_GROUP, help="annotated group photos (../shared/data/group)")
    p.add_argument("--max-side", type=int, default=1024, help="resize photos so their longer side is at most this")
    p.add_argument("--skip-photos", action="store_true")
    p.add_argument("--skip-clip", action="store_true")
    p.add_argument("--liveness", action="store_true",
                   help="the demo clip with liveness on (the server's default: faces followed by their landmarks)")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from recognizer.identity.enrol import build_index
    from recognizer.identity.index import save_index
    from recognizer.vision.detect import EngineConfig, FaceEngine

    engine_hog = FaceEngine()
    engine_both = FaceEngine(EngineConfig(detector="hog+cnn"))
    if not args.skip_photos:
        if not (args.group / "annotations.json").exists():
            print(f"no annotated group photos at {args.group}: skipped")
        else:
            rows = photo_recall(engine_both, args.group, args.max_side)
            print(f"Group photos ({args.group}, longer side <= {args.max_side} px): faces found / expected\n")
            print("| photo | size | expected | HOG | HOG up1 | CNN | hog+cnn | CNN s |")
            print("|---|---|---:|---:|---:|---:|---:|---:|")
            for r in rows:
                print(f"| {r['photo']} | {r['size']} | {r['expected']} | {r['hog']} | {r['hog_up1']} | {r['cnn']} | "
                      f"{r['hog+cnn']} | {r['cnn_s']:.1f} |")
            exp = sum(r["expected"] for r in rows)
            rec = {k: sum(min(r[k], r["expected"]) for r in rows) / exp for k in ("hog", "hog_up1", "cnn", "hog+cnn")}
            print(f"| **recall** | | {exp} | {rec['hog']:.0%} | {rec['hog_up1']:.0%} | {rec['cnn']:.0%} | "
                  f"{rec['hog+cnn']:.0%} | |\n")
    if not args.skip_clip:
        with tempfile.TemporaryDirectory(prefix="facemon-recall-") as tmp:
            index, _ = build_index(engine_hog, REPO / "known_faces")
            save_index(index, Path(tmp))
            rows = clip_recall(engine_hog, engine_both, Path(tmp), args.liveness)
        print(f"Demo clip ({CLIP.name}, liveness {'on' if args.liveness else 'off'}): faces boxed on the 28 annotated frames (every 10th) vs visible by eye\n")
        print("| mode | visible | boxed | recall | extra boxes | ms/frame (this CPU) | sweeps |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for r in rows:
            print(f"| {r['mode']} | {r['visible']} | {r['boxed']} | {r['recall']:.0%} | {r['extra']} | "
                  f"{r['ms_per_frame']:.0f} | {'' if r['sweeps'] is None else r['sweeps']} |")
        print()
        for r in rows:
            print(f"{r['mode']}: faces missed on frames {r['missed']}")


if __name__ == "__main__":
    main()
