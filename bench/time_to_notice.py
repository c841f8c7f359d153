"""Time to notice: frames (and ms at the measured rate) from a face's first appearance to its verdict.

Feeds the per-frame pipeline (tracking + N-of-M voting, the same code the server runs) with a
desk-camera-like sequence: an empty desk, then a person who stays. For an enrolled person the
verdict is their name; for a stranger it is "unknown". Uses the shipped photos, so it runs anywhere;
with ../shared/data present it adds every photo of faces/ whose person is (or is not) enrolled.

    .venv/bin/python -m bench.time_to_notice
"""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]

from recognizer.identity.enrol import build_index
from recognizer.identity.index import IndexStore, save_index
from recognizer.vision.detect import FaceEngine
from recognizer.station.pipeline import PipelineConfig, StationPipeline
from shared.jpeg import encode_jpeg

DATA = Path(os.environ.get("FACEMON_DATA", REPO.parent / "shared" / "data"))


class InlineEncoder:
    def __init__(self, engine: FaceEngine) -> None:
        self.engine = engine

    def encode_chips(self, chips):
        return self.engine.encode_chips(chips)


def as_camera_frame(path: Path, rng: np.random.Generator) -> list[bytes]:
    """The photo fitted into 640x480 with a little sensor noise per frame (so frames are not identical)."""
    img = cv2.imread(str(path))
    h, w = img.shape[:2]
    s = min(640 / w, 480 / h)
    img = cv2.resize(img, (int(w * s), int(h * s)), interpolation=cv2.INTER_AREA)
    canvas = np.full((480, 640, 3), 40, np.uint8)
    canvas[: img.shape[0], : img.shape[1]] = img
    out = []
    for _ in range(20):
        noisy = np.clip(canvas.astype(np.int16) + rng.integers(-4, 5, canvas.shape), 0, 255).astype(np.uint8)
        out.append(encode_jpeg(noisy, 85))
    return out


def frames_to_verdict(pipeline: StationPipeline, frames: list[bytes], expect: str | None) -> tuple[int | None, float]:
    """Frames from first detection until the verdict (name, or 'unknown' when expect is None)."""
    first = None
    t0 = time.perf_counter()
    for i, jpeg in enumerate(frames):
        faces = pipeline.process(jpeg).faces
        if not faces:
            continue
        first = i if first is None else first
        f = faces[0]
        done = f.state == "unknown" if expect is None else (f.state == "known" and f.name == expect)
        if done:
            return i - first + 1, (time.perf_counter() - t0) * 1e3
    return None, (time.perf_counter() - t0) * 1e3


def main() -> None:
    engine = FaceEngine()
    tmp = Path(tempfile.mkdtemp(prefix="facemon-ttn-"))
    index, _ = build_index(engine, REPO / "known_faces")
    save_index(index, tmp)
    store = IndexStore(tmp)
    enrolled = set(index.people)
    cases = [(REPO / "tests/fixtures/obama_probe.jpg", "barack_obama"), (REPO / "tests/fixtures/biden_probe.jpg", "joe_biden"),
             (REPO / "tests/fixtures/stranger_kit.jpg", None)]
    if (DATA / "faces").is_dir():
        for person in sorted((DATA / "faces").iterdir()):
            for photo in sorted(person.iterdir())[:2]:
                cases.append((photo, person.name if person.name in enrolled else None))
    rng = np.random.default_rng(0)
    rows = []
    for path, expect in cases:
        pipeline = StationPipeline(engine, InlineEncoder(engine), store, PipelineConfig(liveness=False))
        frames = as_camera_frame(path, rng)
        n, ms = frames_to_verdict(pipeline, frames, expect)
        rows.append((path.parent.name + "/" + path.name, expect or "unknown", n, ms))
    print("| photo | expected verdict | frames to verdict | ms (this machine, one station, inline encoder) |")
    print("|---|---|---:|---:|")
    for name, expect, n, ms in rows:
        print(f"| {name} | {expect} | {n if n is not None else 'never (20)'} | {ms:.0f} |")
    for label, sel in (("enrolled", lambda r: r[1] != "unknown"), ("strangers", lambda r: r[1] == "unknown")):
        ns = [r[2] for r in rows if sel(r) and r[2] is not None]
        never = sum(1 for r in rows if sel(r) and r[2] is None)
        if ns:
            print(f"{label}: median {np.median(ns):.0f} frames, max {max(ns)}, never within 20 frames: {never}")


if __name__ == "__main__":
    main()
