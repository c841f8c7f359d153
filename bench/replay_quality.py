"""Quality of the whole per-frame path on recorded clips, through facemon-replay with the recognizer's defaults.

For every clip: frames, processing frames/s, tracks and their verdicts, names, blinks found (against the
annotations where the clip has them), liveness states seen, and alert incidents by type. Prints a table and,
with --json, the summaries. Clips: ../shared/data/{blink,spoof/video,video} (when present) and the bundled
samples/hamilton_clip.mp4.

    python -m bench.replay_quality [--data ../shared/data] [--index encodings] [--json out.json]
"""
from __future__ import annotations

import argparse
import io
import json
import logging
import sys
import tempfile
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parents[1]


def clips(data: Optional[Path]) -> list[Path]:
    out = [REPO / "samples" / "hamilton_clip.mp4"]
    if data is not None and data.is_dir():
        for sub in ("blink", "spoof/video/real", "spoof/video/fake", "video"):
            out += sorted(p for p in (data / sub).glob("*") if p.suffix in (".mp4", ".avi", ".webm"))
    return out


def build_sample_index(out: Path) -> Path:
    from recognizer.detect import FaceEngine
    from recognizer.enroll import build_index
    from recognizer.index import save_index

    index, _ = build_index(FaceEngine(), REPO / "known_faces")
    save_index(index, out)
    return out


def replay_one(video: Path, index: Path, extra: list[str]) -> dict:
    from recognizer.replay import build_parser, run

    args = build_parser().parse_args([str(video), "--index", str(index), "--no-frames", *extra])
    return run(args, io.StringIO())


def row(name: str, s: dict, truth: Optional[int]) -> str:
    tracks = s["tracks"].values()
    verdicts: dict[str, int] = {}
    live: dict[str, int] = {}
    for t in tracks:
        verdicts[t["verdict"]] = verdicts.get(t["verdict"], 0) + 1
        live[t["final_liveness"]] = live.get(t["final_liveness"], 0) + 1
    blinks = f"{s['blinks']}" + (f"/{truth}" if truth is not None else "")
    fmt = lambda d: ",".join(f"{k}:{v}" for k, v in sorted(d.items())) or "-"  # noqa: E731
    return (f"| {name} | {s['frames']} | {s['clip_s']:.1f} | {s['frames_per_s']} | {len(s['tracks'])} | {fmt(verdicts)} | "
            f"{fmt(s['named'])} | {blinks} | {fmt(live)} | {fmt(s['incidents'])} |")


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    p.add_argument("--index", type=Path, default=None, help="face index (default: known_faces/ built afresh)")
    p.add_argument("--json", type=Path, default=None, help="also write every summary here")
    p.add_argument("extra", nargs="*", help="flags passed on to facemon-replay (after --)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    index = args.index or build_sample_index(Path(tempfile.mkdtemp(prefix="facemon-index-")))
    truth: dict[str, int] = {}
    ann = args.data / "blink" / "annotations.json"
    if ann.exists():
        truth = {k: v["blink_count"] for k, v in json.loads(ann.read_text()).items() if isinstance(v, dict)}
    print("| clip | frames | clip s | frames/s | tracks | verdicts (per track) | frames named | blinks found/true | "
          "final liveness (per track) | alert incidents |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    summaries = {}
    for video in clips(args.data):
        s = replay_one(video, index, args.extra)
        summaries[video.name] = s
        print(row(video.name, s, truth.get(video.name)), flush=True)
    if args.json:
        args.json.write_text(json.dumps(summaries, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
