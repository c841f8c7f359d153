"""Console entry `facemon-replay VIDEO`: a recorded clip through exactly the recognizer's per-frame path and alert rules.

Every frame of the clip is encoded to JPEG as an edge would send it and handed to the same `StationPipeline`
the server builds for a station (same flags, environment variables and defaults as `facemon-recognizer`, same
liveness and open-set matching), then to the same `AlertEngine`. Time is the clip's own time (frame index /
fps), so a replay is repeatable and a 10-minute clip does not need 10 minutes of waiting for its timeouts.

Output on stdout, one JSON object per line:

- ``{"frame": i, "t": s, "faces": [...], "ms": ...}`` for each processed frame (``--frames`` off to skip),
- ``{"alert": type, "state": open|update|closed, "t": s, "alert_id": ..., "details": {...}}`` per alert event,
- ``{"summary": {...}}`` at the end: frames, processing frames/s, per-track verdicts and liveness, blinks,
  alert incidents by type.

Used to review a recorded session afterwards and to measure quality (bench/replay_quality.py).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence, TextIO

from shared.results import FaceResult, faces_to_wire

log = logging.getLogger("recognizer.tools.replay")


# what a replay uses of the recognizer's settings (`into` targets, by section): the per-frame path and the alert rules
REPLAYED = ("engine.", "sweep.", "pipeline.", "match.", "liveness.", "liveness_method", "alerts.", "review.", "index_dir",
            "data_key_file")
REPLAYED_FLAGS = ("--full-detect-every", "--alert-types", "--log-level")  # settings read without an `into`


def build_parser() -> argparse.ArgumentParser:
    from recognizer.settings import SETTINGS, build_parser as recognizer_parser

    p = recognizer_parser(prog="facemon-replay", description=(
        "Run a recorded clip through the recognizer's per-frame path and alert rules, exactly as a station's frames "
        "are processed (same flags and defaults as facemon-recognizer; its other flags, for the network, the "
        "dashboard, the outbox or a pool, are accepted and ignored, and not listed here), and print one JSON line per "
        "frame and per alert event, then a summary. Time is the clip's time."))
    unused = {s.dest for s in SETTINGS
              if s.flag not in REPLAYED_FLAGS and not any(t.startswith(REPLAYED) for t in s.into)}
    for action in p._actions:  # still parsed (one command line or env file serves both programs), not shown
        if action.dest in unused:
            action.help = argparse.SUPPRESS
    p.add_argument("video", help="video file (anything OpenCV reads: mp4, avi, webm, an image sequence pattern)")
    p.add_argument("--login", default="", help="the evaluator expected at the desk (for wrong_person)")
    p.add_argument("--station", default="replay", help="station id written in the alert events")
    p.add_argument("--fps", type=float, default=0.0, help="clip frame rate when the file does not say (0: from the file)")
    p.add_argument("--every", type=int, default=1, help="process every Nth frame (an edge that drops frames)")
    p.add_argument("--max-frames", type=int, default=0, help="stop after this many processed frames (0: the whole clip)")
    p.add_argument("--loop", type=int, default=1, help="play the clip this many times (a looping photo or replay)")
    p.add_argument("--jpeg-quality", type=int, default=80, help="JPEG quality the edge would send at")
    p.add_argument("--frames", default=True, action=argparse.BooleanOptionalAction, help="print a line per frame")
    p.add_argument("--save-annotated", default="", help="folder to write the annotated JPEG of every processed frame")
    return p


@dataclass
class TrackSummary:
    first_t: float
    last_t: float
    frames: int = 0
    states: Counter = field(default_factory=Counter)
    names: Counter = field(default_factory=Counter)
    liveness: Counter = field(default_factory=Counter)
    blinks: int = 0
    min_distance: Optional[float] = None
    named_at: Optional[float] = None
    final_liveness: str = "unknown"

    def add(self, t: float, face: FaceResult) -> None:
        self.last_t = t
        self.frames += 1
        self.states[face.state] += 1
        if face.name:
            self.names[face.name] += 1
            if self.named_at is None:
                self.named_at = t
        self.liveness[face.liveness] += 1
        self.final_liveness = face.liveness
        self.blinks = max(self.blinks, face.blinks)
        d = face.distance
        if d is not None:
            self.min_distance = d if self.min_distance is None else min(self.min_distance, d)

    def to_dict(self) -> dict:
        return {
            "first_t": round(self.first_t, 3), "last_t": round(self.last_t, 3), "frames": self.frames,
            "verdict": self.states.most_common(1)[0][0] if self.states else "pending",
            "states": dict(self.states), "names": dict(self.names),
            "named_after_s": None if self.named_at is None else round(self.named_at - self.first_t, 3),
            "liveness": dict(self.liveness), "final_liveness": self.final_liveness, "blinks": self.blinks,
            "min_distance": self.min_distance,
        }


def read_frames(path: str, fps_override: float = 0.0, loops: int = 1) -> Iterator[tuple[int, float, Any]]:
    """(index, clip time in s, BGR frame) of every frame, `loops` times over; time keeps running across loops."""
    import cv2

    if not Path(path).exists():
        raise FileNotFoundError(f"no such video: {path}")
    offset, index = 0.0, 0
    for _ in range(max(1, loops)):
        cap = cv2.VideoCapture(path)
        if not cap.isOpened():
            raise ValueError(f"cannot open video {path!r} (not a video OpenCV can read)")
        fps = fps_override or cap.get(cv2.CAP_PROP_FPS) or 0.0
        if not 1.0 <= fps <= 240.0:
            fps = 25.0
            log.warning("%s does not give a usable frame rate; assuming 25 fps (set --fps)", path)
        n = 0
        try:
            while True:
                ok, frame = cap.read()
                if not ok or frame is None:
                    break
                yield index, offset + n / fps, frame
                n += 1
                index += 1
        finally:
            cap.release()
        if n == 0:
            raise ValueError(f"no frames could be read from {path!r}")
        offset += n / fps


class ClipClock:
    """The clip's time in seconds, set by the replay before each frame; liveness reads it as its clock."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class Replay:
    """Feeds frames through one station's pipeline and alert engine and writes JSON lines to `out`."""

    def __init__(self, new_pipeline: Callable[[], Any], engine: Any, clock: ClipClock, out: TextIO, login: str = "",
                 print_frames: bool = True, save_dir: Optional[Path] = None, review: Any = None) -> None:
        self.clock = clock
        self.review = review  # a ReviewPicker: the not-sure faces the server would post to the review queue
        self.pipeline = new_pipeline()
        self.alerts = engine
        self.out = out
        self.login = login
        self.print_frames = print_frames
        self.save_dir = save_dir
        self.tracks: dict[int, TrackSummary] = {}
        self.incidents: Counter = Counter()
        self.events: Counter = Counter()
        self.frames = 0
        self.busy_s = 0.0
        self.bad_frames = 0
        self.review_faces = 0

    def _emit(self, obj: dict) -> None:
        self.out.write(json.dumps(obj, separators=(",", ":")) + "\n")

    def feed(self, index: int, t: float, jpeg: bytes) -> None:
        from recognizer.alerting.monitor import frame_stats, stats_of_thumb
        from recognizer.vision.imageio import BadImage

        self.clock.t = t
        start = time.perf_counter()
        try:
            outcome = self.pipeline.process(jpeg)
        except BadImage as exc:
            self.bad_frames += 1
            log.warning("frame %d: %s", index, exc)
            return
        stats = stats_of_thumb(outcome.thumb) if outcome.thumb is not None else frame_stats(jpeg)  # as the server
        events = self.alerts.observe(t, outcome.faces, self.login, stats, None)
        self.busy_s += time.perf_counter() - start
        self.frames += 1
        for face in outcome.faces:
            summary = self.tracks.get(face.track)
            if summary is None:
                summary = self.tracks[face.track] = TrackSummary(t, t)
            summary.add(t, face)
        if self.print_frames:
            self._emit({"frame": index, "t": round(t, 3), "faces": faces_to_wire(outcome.faces), "ms": outcome.timings_ms.get("total")})
        if self.save_dir is not None:
            (self.save_dir / f"{index:06d}.jpg").write_bytes(outcome.annotated)
        for ev in events:
            self._event(ev, t)
        for item in self.review.observe(t, outcome.faces) if self.review is not None else ():
            self._review(item, t)

    def _review(self, item: Any, t: float) -> None:
        """A not-sure face the server would post to the review queue (its crop and encoding left out)."""
        self.review_faces += 1
        b = item.body
        self._emit({"review": {"track": b["track"], "verdict": b["verdict"], "candidate": b["candidate"],
                               "distance": b["distance"]}, "t": round(t, 3)})

    def _event(self, ev: Any, t: float) -> None:
        self.events[(ev.type, ev.state)] += 1
        if ev.state == "open":
            self.incidents[ev.type] += 1
        self._emit({"alert": ev.type, "state": ev.state, "t": round(t, 3), "alert_id": ev.alert_id,
                    "started_at": round(ev.started_at, 3),
                    "ended_at": None if ev.ended_at is None else round(ev.ended_at, 3), "details": ev.details})

    def finish(self, t: float) -> dict:
        for ev in self.alerts.close_all(t, "replay_ended"):
            self._event(ev, t)
        for item in self.review.close_all() if self.review is not None else ():
            self._review(item, t)
        summary = {
            "frames": self.frames, "bad_frames": self.bad_frames,
            "clip_s": round(t, 3),
            "frames_per_s": round(self.frames / self.busy_s, 2) if self.busy_s > 0 else None,
            "tracks": {str(k): v.to_dict() for k, v in sorted(self.tracks.items())},
            "named": dict(sum((v.names for v in self.tracks.values()), Counter())),
            "blinks": sum(v.blinks for v in self.tracks.values()),
            "incidents": dict(self.incidents),
            "events": {f"{k}:{s}": n for (k, s), n in sorted(self.events.items())},
            "review_faces": self.review_faces,
        }
        self._emit({"summary": summary})
        return summary


def run(args: argparse.Namespace, out: TextIO = sys.stdout) -> dict:
    """Replay `args.video` with recognizer settings from `args`; returns the summary (also printed)."""

    from recognizer.alerting.review import ReviewPicker
    from recognizer.alerting.rules import AlertEngine
    from recognizer.app import RecognizerSettings, pipeline_factory
    from recognizer import data_key
    from recognizer.identity.index import IndexMissing, IndexStore, load_index
    from recognizer.vision.detect import FaceEngine
    from shared.jpeg import encode_jpeg

    if args.every < 1 or args.loop < 1 or args.max_frames < 0 or not 1 <= args.jpeg_quality <= 100:
        raise ValueError("--every and --loop must be >= 1, --max-frames >= 0, --jpeg-quality 1..100")
    settings = RecognizerSettings.from_args(args)
    # an index sealed at rest opens with the recognizer's own key (--data-key-file / FACEMON_DATA_KEY); one that
    # cannot be read is an error here, not an empty index that calls everyone unknown
    ring = data_key.load(settings.data_key_file)
    try:
        load_index(settings.index_dir, ring=ring)
    except IndexMissing:
        pass
    engine = FaceEngine(settings.engine)
    store = IndexStore(settings.index_dir, ring=ring)
    if not len(store.index):
        log.warning("the index in %s is empty: every face will be unknown", settings.index_dir)
    save_dir = Path(args.save_annotated) if args.save_annotated else None
    if save_dir is not None:
        save_dir.mkdir(parents=True, exist_ok=True)
    # the clip's clock drives liveness; dlib's encoder runs in this process (same model as the workers)
    clock = ClipClock()
    new_pipeline = pipeline_factory(settings, engine, engine, store, clock=clock)
    replay = Replay(new_pipeline, AlertEngine(args.station, settings.alerts), clock, out, args.login, args.frames,
                    save_dir, ReviewPicker(args.station, settings.review))
    t = 0.0
    for index, t, frame in read_frames(args.video, args.fps, args.loop):
        if index % args.every:
            continue
        try:
            jpeg = encode_jpeg(frame, args.jpeg_quality)  # as the edge sends it
        except ValueError as exc:
            log.warning("frame %d: %s", index, exc)
            continue
        replay.feed(index, t, jpeg)
        if args.max_frames and replay.frames >= args.max_frames:
            break
    return replay.finish(t)


def main(argv: Optional[Sequence[str]] = None) -> int:
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    from shared.config import ConfigError, setup_logging

    try:
        args = build_parser().parse_args(argv)
        setup_logging(args.log_level)
    except ConfigError as exc:
        print(f"facemon-replay: configuration error: {exc}", file=sys.stderr)
        return 2
    from recognizer.identity.index import FaceIndexError

    try:
        run(args)
    except (ConfigError, ValueError, FileNotFoundError, FaceIndexError) as exc:
        print(f"facemon-replay: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # piped into head: not an error
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
