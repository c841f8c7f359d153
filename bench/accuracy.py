"""Accuracy of the seeds' rule and the open-set rule, side by side in one run.

Photos (per image): ../shared/data/faces with the open-set protocol of `facemon-calibrate`
(k photos enrolled per person, a share of identities never enrolled, random splits).
Video (per track, best effort): the Hamilton clip with faces/lin_manuel_miranda enrolled; every
frame is detected and encoded, faces are linked by box overlap, and each track's identity comes
from `IdentityVoter`; the seeds' rule is counted per face-frame on the same encodings.

    python -m bench.accuracy [--data ../shared/data] [--cache DIR] [--splits 20] [--no-video]

"Degraded" probes are the same photos as a poor desk camera would give them (face shrunk to 56 px wide,
40 % darker, JPEG quality 35, seen at 2x): a harder, more general test than the clean photos, where no
stranger comes closer than 0.64.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from recognizer.identity.index import DIM, FaceIndex
from recognizer.identity.match import KNOWN, UNKNOWN, IdentityVoter, OpenSetParams
from recognizer.tools.calibrate import (
    Photos,
    Rates,
    Setting,
    default_grid,
    encode_folder,
    evaluate,
    make_splits,
    recommend,
    run_grid,
)
from recognizer.tools.seeds import MatchParams, vote

REPO = Path(__file__).resolve().parents[1]
OLD_DEFAULTS = OpenSetParams(accept_distance=0.5, margin=0.05, min_votes=2)  # before 2026-12 (issue 12)

log = logging.getLogger("bench.accuracy")


def data_dir(arg: str | None) -> Path:
    """--data, else $FACEMON_DATA, else ../shared/data beside the repository."""
    return Path(arg or os.environ.get("FACEMON_DATA") or REPO.parent / "shared" / "data").resolve()


def _engine():
    from recognizer.vision.detect import FaceEngine

    return FaceEngine()


def degraded_encodings(photos: Photos, engine) -> np.ndarray:
    """Each photo as a poor desk camera sees it, encoded (NaN where no face is found any more)."""
    import cv2

    out = np.full((len(photos.sources), DIM), np.nan, np.float32)
    for i, src in enumerate(photos.sources):
        bgr = cv2.imread(src)
        if bgr is None:
            continue
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        boxes = engine.detect(rgb, 0) or engine.detect(rgb, 1)
        if not boxes:
            continue
        f = 56 / max(1, boxes[0][1] - boxes[0][3])
        small = (cv2.resize(bgr, None, fx=f, fy=f, interpolation=cv2.INTER_AREA) * 0.6).astype(np.uint8)
        ok, buf = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, 35])
        seen = cv2.cvtColor(cv2.resize(cv2.imdecode(buf, cv2.IMREAD_COLOR), None, fx=2, fy=2), cv2.COLOR_BGR2RGB)
        found = engine.detect(seen, 1)
        if found:
            out[i] = engine.encode(seen, found[:1])[0]
    return out


def photo_table(faces: Path, cache: Path, splits: int, seed: int) -> None:
    """Print the per-image protocol for the seeds' rule, the old and the new defaults, on clean and degraded probes."""
    photos = encode_folder(faces, _engine, cache)
    degraded = degraded_encodings(photos, _engine())
    lost = int(np.isnan(degraded).any(axis=1).sum())
    degraded = np.where(np.isnan(degraded), photos.encodings, degraded)  # a face no longer found: keep the clean one
    print(f"\n## Photos: {len(photos.names)} photos of {len(set(photos.names))} people "
          f"({len(photos.skipped)} skipped; {lost} not found again when degraded), {splits} random splits, 30 % "
          "of identities never enrolled, figures per image")
    rows = [("seeds tol 0.6", Setting("seeds", seeds_tolerance=0.6)),
            ("old 0.50/0.05", Setting("old", params=OLD_DEFAULTS)),
            ("new defaults", Setting("new", params=OpenSetParams()))]
    print("| probes | k | rule | genuine | named % | misnamed % | strangers | strangers accepted % | worst split % |")
    print("|---|---|---|---|---|---|---|---|---|")
    for label, probes in (("clean", None), ("degraded", degraded)):
        for k in (1, 3, 5):
            sp = make_splits(photos, k, 0.3, splits, seed, probes)
            for name, setting in rows:
                r: Rates = evaluate(sp, setting.decider())
                print(f"| {label} | {k} | {name} | {r.genuine} | {100 * r.gar:.1f} | {100 * r.mis:.1f} | "
                      f"{r.strangers} | {100 * r.far:.1f} | {100 * r.far_worst:.1f} |")
    best = recommend(run_grid(make_splits(photos, 3, 0.3, splits, seed), default_grid()))
    if best:
        p = best[0].params
        print(f"calibration on this folder (k=3) would recommend accept={p.accept_distance} margin={p.margin} "
              f"min_votes={p.min_votes} slack={p.person_slack}: GAR {100 * best[1].gar:.1f}%, "
              f"FAR {100 * best[1].far:.1f}%")


def _iou(a, b) -> float:
    top, right, bottom, left = max(a[0], b[0]), min(a[1], b[1]), min(a[2], b[2]), max(a[3], b[3])
    inter = max(0, right - left) * max(0, bottom - top)
    area = lambda x: (x[1] - x[3]) * (x[2] - x[0])  # noqa: E731
    return inter / float(area(a) + area(b) - inter) if inter else 0.0


def video_table(data: Path, clip: Path, max_frames: int) -> None:
    """Per-track figures on the Hamilton clip with lin_manuel_miranda enrolled (every frame encoded)."""
    import cv2

    engine = _engine()
    person = data / "faces" / "lin_manuel_miranda"
    index = FaceIndex.empty()
    for img in sorted(person.iterdir()):
        rgb = cv2.cvtColor(cv2.imread(str(img)), cv2.COLOR_BGR2RGB)
        boxes = engine.detect(rgb, 1)
        if boxes:  # a portrait: the largest face is the person (small background detections ignored)
            index = index.add(person.name, engine.encode(rgb, boxes[:1]), [str(img)])
    cap = cv2.VideoCapture(str(clip))
    voter = IdentityVoter(OpenSetParams())
    tracks: dict[int, dict] = {}
    live: list[tuple[int, tuple]] = []
    next_id, frame_no, faces, t0 = 0, 0, 0, time.perf_counter()
    while frame_no < max_frames:
        ok, bgr = cap.read()
        if not ok:
            break
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        boxes = engine.detect(rgb, 1)
        encs = engine.encode(rgb, boxes)
        faces += len(boxes)
        new_live, obs = [], []
        for box, enc in zip(boxes, encs):
            match = max(live, key=lambda tb: _iou(tb[1], box), default=None)
            if match is not None and _iou(match[1], box) >= 0.3:
                tid = match[0]
                live.remove(match)
            else:
                tid, next_id = next_id, next_id + 1
                tracks[tid] = {"first": frame_no, "frames": 0, "seeds_named": 0, "states": [], "decided_at": None,
                               "dist": []}
            new_live.append((tid, box))
            obs.append((tid, enc[None]))
            tracks[tid]["frames"] += 1
            seeds = vote(index, enc[None], MatchParams(0.6))[0]
            tracks[tid]["seeds_named"] += seeds.name is not None
            tracks[tid]["dist"].append(seeds.distance)
        for tid, ident in voter.observe_many(obs, index).items():
            t = tracks[tid]
            t["states"].append(ident.name or ident.state)
            if t["decided_at"] is None and ident.state in (KNOWN, UNKNOWN):
                t["decided_at"] = t["frames"]
        for tid, _ in live:
            voter.forget(tid)
        live = new_live
        frame_no += 1
    elapsed = time.perf_counter() - t0
    print(f"\n## Video: {clip.name}, {frame_no} frames, {faces} face detections, {len(tracks)} tracks "
          f"({elapsed:.0f} s; every frame detected at upsample 1 and encoded), enrolled: {len(index)} photos of "
          f"{person.name}")
    print(f"{'track':>5} {'first':>5} {'frames':>6} {'seeds named%':>12} {'final':<20} {'decided after':>13} "
          f"{'name changes':>12} {'named frames%':>13} {'median dist':>11}")
    for tid, t in sorted(tracks.items()):
        if t["frames"] < 3:
            continue
        st = t["states"]
        changes = sum(a != b for a, b in zip(st, st[1:]) if a not in ("pending",) and b not in ("pending",))
        named = sum(s not in ("pending", "unknown") for s in st)
        print(f"{tid:>5} {t['first']:>5} {t['frames']:>6} {100 * t['seeds_named'] / t['frames']:12.0f} "
              f"{st[-1]:<20} {str(t['decided_at']):>13} {changes:>12} {100 * named / t['frames']:13.0f} "
              f"{np.median(t['dist']):11.2f}")
    print("(tracks shorter than 3 frames not shown; 'decided after' counts encoded frames of the track)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", help="team data folder (default $FACEMON_DATA or ../shared/data)")
    ap.add_argument("--cache", type=Path, help="encoding cache folder (default: a temporary folder)")
    ap.add_argument("--splits", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-video", action="store_true", help="skip the per-track video figures")
    ap.add_argument("--max-frames", type=int, default=275)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    data = data_dir(args.data)
    if not (data / "faces").is_dir():
        print(f"no test data at {data} (set FACEMON_DATA or --data)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        photo_table(data / "faces", args.cache or Path(tmp), args.splits, args.seed)
    clip = data / "video" / "ageitgey_short_hamilton_clip.mp4"
    if not args.no_video and clip.exists():
        video_table(data, clip, args.max_frames)
    return 0


if __name__ == "__main__":
    sys.exit(main())
