"""Quality of the whole per-frame path on recorded clips, through facemon-replay with the recognizer's defaults.

For every clip: frames, processing frames/s, tracks and their verdicts, names, time to name (clip seconds from a
track's first box to its first named frame; goal <= 1 s), blinks found (against the annotations where the clip has
them), liveness states seen, and alert incidents by type. Prints a table and,
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

from shared.results import faces_from_wire

REPO = Path(__file__).resolve().parents[1]


def clips(data: Optional[Path]) -> list[Path]:
    out = [REPO / "samples" / "hamilton_clip.mp4"]
    if data is not None and data.is_dir():
        for sub in ("blink", "spoof/video/real", "spoof/video/fake", "video"):
            out += sorted(p for p in (data / sub).glob("*") if p.suffix in (".mp4", ".avi", ".webm"))
    return out


def build_sample_index(out: Path) -> Path:
    from recognizer.identity.enrol import build_index
    from recognizer.identity.index import save_index
    from recognizer.vision.detect import FaceEngine

    index, _ = build_index(FaceEngine(), REPO / "known_faces")
    save_index(index, out)
    return out


def replay_one(video: Path, index: Path, extra: list[str]) -> tuple[dict, list[int], list[float]]:
    """The replay's summary, the frames on which a face's blink count went up, and per named track the clip
    seconds from its first box to its first frame with a name (time to name)."""
    from recognizer.tools.replay import build_parser, run

    out = io.StringIO()
    summary = run(build_parser().parse_args([str(video), "--index", str(index), *extra]), out)
    counted: list[int] = []
    last: dict[int, int] = {}
    first_box: dict[int, float] = {}
    to_name: dict[int, float] = {}
    for line in out.getvalue().splitlines():
        obj = json.loads(line)
        for face in faces_from_wire(obj.get("faces", [])):
            if face.blinks > last.get(face.track, 0):
                counted.append(obj["frame"])
            last[face.track] = face.blinks
            first_box.setdefault(face.track, obj["t"])
            if face.name and face.track not in to_name:
                to_name[face.track] = obj["t"] - first_box[face.track]
    return summary, counted, list(to_name.values())


def name_times(times: list[float]) -> str:
    """Time to name over a clip's named tracks: 'min / median / max s (n tracks)', '-' when none was named."""
    if not times:
        return "-"
    times = sorted(times)
    median = times[len(times) // 2] if len(times) % 2 else 0.5 * (times[len(times) // 2 - 1] + times[len(times) // 2])
    return f"{times[0]:.2f} / {median:.2f} / {times[-1]:.2f} ({len(times)})"


def score_blinks(counted: list[int], events: list[dict], slack_before: int = 2, slack_after: int = 20) -> tuple[int, int]:
    """(annotated blinks found, blinks invented): a counted blink matches an annotated closure when it is counted
    between its first closed frame - slack_before and its last + slack_after (a blink is counted on re-opening,
    and the EAR and CNN detectors are fused within 0.5 s)."""
    blinks = [e["closed"] for e in events if e.get("type") == "blink"]
    used: set[int] = set()
    invented = 0
    for frame in counted:
        match = next((i for i, (a, b) in enumerate(blinks)
                      if i not in used and a - slack_before <= frame <= b + slack_after), None)
        if match is None:
            invented += 1
        else:
            used.add(match)
    return len(used), invented


def row(name: str, s: dict, truth: Optional[tuple[int, int, int]], to_name: list[float]) -> str:
    tracks = s["tracks"].values()
    verdicts: dict[str, int] = {}
    live: dict[str, int] = {}
    for t in tracks:
        verdicts[t["verdict"]] = verdicts.get(t["verdict"], 0) + 1
        live[t["final_liveness"]] = live.get(t["final_liveness"], 0) + 1
    blinks = f"{s['blinks']}" if truth is None else f"{s['blinks']} ({truth[0]} of {truth[1]} found, {truth[2]} invented)"
    fmt = lambda d: ",".join(f"{k}:{v}" for k, v in sorted(d.items())) or "-"  # noqa: E731
    return (f"| {name} | {s['frames']} | {s['clip_s']:.1f} | {s['frames_per_s']} | {len(s['tracks'])} | {fmt(verdicts)} | "
            f"{fmt(s['named'])} | {name_times(to_name)} | {blinks} | {fmt(live)} | {fmt(s['incidents'])} |")


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    p.add_argument("--index", type=Path, default=None, help="face index (default: known_faces/ built afresh)")
    p.add_argument("--json", type=Path, default=None, help="also write every summary here")
    p.add_argument("--only", default="", help="only clips whose file name contains this")
    p.add_argument("extra", nargs="*", help="flags passed on to facemon-replay (after --)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    index = args.index or build_sample_index(Path(tempfile.mkdtemp(prefix="facemon-index-")))
    annotations: dict[str, dict] = {}
    ann = args.data / "blink" / "annotations.json"
    if ann.exists():
        annotations = {k: v for k, v in json.loads(ann.read_text()).items() if isinstance(v, dict)}
    print("| clip | frames | clip s | frames/s | tracks | verdicts (per track) | frames named | "
          "time to name, s: min / median / max (named tracks) | blinks counted | final liveness (per track) | "
          "alert incidents |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    summaries = {}
    for video in (c for c in clips(args.data) if args.only in c.name):
        s, counted, to_name = replay_one(video, index, args.extra)
        summaries[video.name] = s
        truth = None
        if video.name in annotations:
            found, invented = score_blinks(counted, annotations[video.name]["events"])
            truth = (found, annotations[video.name]["blink_count"], invented)
        print(row(video.name, s, truth, to_name), flush=True)
    if args.json:
        args.json.write_text(json.dumps(summaries, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
