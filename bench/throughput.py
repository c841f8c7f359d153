"""Throughput and latency of the recognizer: 1..N stations streaming a real 640x480 clip at camera rate.

Each simulated station behaves like the edge: a 30 fps camera, at most `--in-flight` frames
outstanding, newer frames dropped (never queued) while the window is full. Prints frames/s per
station and in total, latency percentiles (send → annotated reply), dropped frames, and the
recognizer's memory (main process + encoder workers) before and after. Also runs the seeds'
per-frame loop (HOG upsample 1 + encode every face on every frame) on the same frames.

    .venv/bin/python -m bench.throughput --stations 1 4 --seconds 20
    .venv/bin/python -m bench.throughput --detectors hog hog+cnn --no-seeds   # today's detector vs the new mode
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]

from recognizer.app import RecognizerApp, RecognizerSettings
from recognizer.identity.enroll import build_index
from recognizer.identity.index import save_index
from recognizer.server.stations import ServerConfig
from recognizer.vision.detect import DETECTORS, EngineConfig
from recognizer.station.pipeline import PipelineConfig
from shared import protocol
from shared.stream import MessageStream

DATA = Path(os.environ.get("FACEMON_DATA", REPO.parent / "shared" / "data"))
WEBCAM_CLIP = DATA / "video" / "eyeblink8_concat_webcam.mp4"  # 640x480 webcam, one face
FALLBACK_CLIP = REPO / "samples" / "hamilton_clip.mp4"


def tile(frame: np.ndarray, faces: int) -> np.ndarray:
    """k copies of a one-face frame: 2 side by side, 4 in a 2x2 grid (each face keeps its size)."""
    if faces == 1:
        return frame
    row = np.hstack([frame, frame[:, ::-1]])
    return row if faces == 2 else np.vstack([row, row[:, ::-1]])


def load_frames(path: Path, limit: int, size: tuple[int, int] = (640, 480), faces: int = 1) -> list[bytes]:
    """Up to `limit` frames of the clip as JPEGs (quality 80) at `size` (tiled for several faces)."""
    cap = cv2.VideoCapture(str(path))
    out = []
    while len(out) < limit:
        ok, frame = cap.read()
        if not ok:
            break
        if (frame.shape[1], frame.shape[0]) != size:
            frame = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
        frame = tile(frame, faces)
        out.append(cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 80])[1].tobytes())
    cap.release()
    if not out:
        raise SystemExit(f"could not read frames from {path}")
    return out


def rss_mb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def cpu_s(pids: list[int]) -> float:
    """CPU seconds (user + system, all threads) used so far by these processes."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
        except OSError:
            pass
    return total / os.sysconf("SC_CLK_TCK")


def station(addr, name: str, token: str, frames: list[bytes], seconds: float, fps: float, in_flight: int, out: dict) -> None:
    """One simulated edge: camera at `fps`, bounded window, stale frames dropped."""
    stream = MessageStream(socket.create_connection(addr, timeout=30))
    stream.send(protocol.hello(name, "bench", token))
    assert stream.recv().kind == protocol.MessageKind.WELCOME
    window = threading.Semaphore(in_flight)
    sent: dict[int, float] = {}
    lat: list[float] = []
    done = threading.Event()
    replies = [0]

    def receive() -> None:
        while True:
            try:
                msg = stream.recv()
            except OSError:  # closed by the sender side at the end of the run
                return
            if msg is None:
                return
            t = time.perf_counter()
            seq = msg.header["seq"]
            if seq in sent:
                lat.append(t - sent.pop(seq))
                replies[0] += 1
            window.release()
            if done.is_set() and not sent:
                return

    rx = threading.Thread(target=receive, daemon=True)
    rx.start()
    start = time.perf_counter()
    seq = dropped = 0
    next_t = start
    while time.perf_counter() - start < seconds:
        next_t += 1.0 / fps
        delay = next_t - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        if not window.acquire(blocking=False):
            dropped += 1
            continue
        seq += 1
        sent[seq] = time.perf_counter()
        stream.send(protocol.frame(seq, time.time(), frames[seq % len(frames)]))
    elapsed = time.perf_counter() - start
    done.set()
    rx.join(timeout=10)
    stream.close()
    out.update(replies=replies[0], elapsed=elapsed, latencies=lat, dropped=dropped)


def run_stations(app, n: int, frames, seconds, fps, in_flight, token) -> dict:
    results = [dict() for _ in range(n)]
    threads = [
        threading.Thread(target=station, args=(app.server.address, f"bench-{n}-{i}-{time.monotonic_ns() % 100000}", token, frames, seconds, fps, in_flight, results[i]))
        for i in range(n)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lat = np.array([x for r in results for x in r["latencies"]]) * 1e3
    per_station = [r["replies"] / r["elapsed"] for r in results]
    return {
        "stations": n,
        "fps_station": float(np.mean(per_station)),
        "fps_total": float(np.sum(per_station)),
        "p50": float(np.percentile(lat, 50)),
        "p95": float(np.percentile(lat, 95)),
        "p99": float(np.percentile(lat, 99)),
        "dropped": sum(r["dropped"] for r in results),
        "frames": sum(r["replies"] for r in results),
    }


def seeds_loop(frames: list[bytes], index, seconds: float) -> float:
    """The seeds' per-frame loop: HOG with upsample 1, encode every face every frame, compare at 0.6."""
    from recognizer.identity.match import MatchParams, vote
    from recognizer.vision.detect import FaceEngine

    engine = FaceEngine()
    start, n = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        bgr = cv2.imdecode(np.frombuffer(frames[n % len(frames)], np.uint8), cv2.IMREAD_COLOR)
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        boxes = engine.detect(rgb, upsample=1)
        vote(index, engine.encode(rgb, boxes), MatchParams(0.6))
        n += 1
    return n / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clip", type=Path, default=WEBCAM_CLIP if WEBCAM_CLIP.exists() else FALLBACK_CLIP)
    p.add_argument("--stations", type=int, nargs="+", default=[1, 4])
    p.add_argument("--seconds", type=float, default=20.0, help="per station-count run")
    p.add_argument("--fps", type=float, default=30.0, help="simulated camera rate per station")
    p.add_argument("--in-flight", type=int, default=2)
    p.add_argument("--downscale", type=float, default=1.0)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--faces", type=int, nargs="+", default=[1], choices=[1, 2, 4],
                   help="faces per frame (the clip tiled: 2 = 1280x480, 4 = 1280x960)")
    p.add_argument("--detectors", nargs="+", default=["hog"], choices=DETECTORS,
                   help="run the whole set once per detector mode, one after the other in this run (side by side)")
    p.add_argument("--no-liveness", action="store_true",
                   help="liveness off (what the recognizer did before issue 9 fixed it: it never ran)")
    p.add_argument("--no-seeds", action="store_true", help="skip the seeds' loop")
    p.add_argument("--mem-every", type=float, default=0, help="also print memory every N seconds (soak runs)")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)

    frames_by_faces = {k: load_frames(args.clip, 300 if k > 1 else 600, faces=k) for k in args.faces}
    frames = frames_by_faces[args.faces[0]]
    tmp = Path(tempfile.mkdtemp(prefix="facemon-bench-"))
    from recognizer.vision.detect import FaceEngine

    index, _ = build_index(FaceEngine(), REPO / "known_faces")
    save_index(index, tmp / "encodings")
    token = "bench"
    rows = []
    for detector in args.detectors:
        app = RecognizerApp(RecognizerSettings(
            server=ServerConfig(host="127.0.0.1", port=0, token=token, max_in_flight=args.in_flight),
            engine=EngineConfig(detector=detector),
            pipeline=PipelineConfig(detect_scale=args.downscale, liveness=not args.no_liveness),
            index_dir=tmp / "encodings", known_faces=tmp / "kf", workers=args.workers,
        ))
        app.start()
        pids = [os.getpid()] + [pr.pid for pr in app.pool._pool._processes.values()]  # noqa: SLF001 (bench only)
        sweep_pids = [pr.pid for pr in app.sweeper._pool._processes.values()] if app.sweeper is not None else []  # noqa: SLF001
        pids += sweep_pids
        print(f"[{detector}] clip: {args.clip.name} ({len(frames)} frames used, 640x480), camera {args.fps:.0f} fps per "
              f"station, in flight {args.in_flight}, downscale {args.downscale}, {app.pool.workers} encoder workers, "
              f"{os.cpu_count()} CPUs", flush=True)
        mem0 = rss_mb(pids)
        sampling = threading.Event()
        if args.mem_every:
            def sample() -> None:
                start = time.monotonic()
                while not sampling.wait(args.mem_every):
                    print(f"t={time.monotonic() - start:5.0f} s  recognizer RSS {rss_mb(pids):.0f} MB", flush=True)
            threading.Thread(target=sample, daemon=True).start()
        for k, kframes in frames_by_faces.items():
            for n in args.stations:
                cpu0, sweep0 = cpu_s(pids), cpu_s(sweep_pids)
                row = run_stations(app, n, kframes, args.seconds, args.fps, args.in_flight, token)
                row["faces"], row["detector"] = k, detector
                # CPU per frame served: the load-independent cost (the bench's own station threads included)
                row["cpu_ms"] = (cpu_s(pids) - cpu0) * 1e3 / max(row["frames"], 1)
                row["sweep_cpu_s"] = cpu_s(sweep_pids) - sweep0
                rows.append(row)
        mem1 = rss_mb(pids)
        sampling.set()
        app.stop()
        print(f"[{detector}] recognizer memory (main + workers): {mem0:.0f} MB before, {mem1:.0f} MB after")
    shutil.rmtree(tmp, ignore_errors=True)

    print()
    print("| detector | faces/frame | stations | frames/s per station | frames/s total | latency p50 ms | p95 ms | p99 ms | "
          "frames dropped at edge | CPU ms per frame | sweep CPU s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['detector']} | {r['faces']} | {r['stations']} | {r['fps_station']:.1f} | {r['fps_total']:.1f} | "
              f"{r['p50']:.0f} | {r['p95']:.0f} | {r['p99']:.0f} | {r['dropped']} | {r['cpu_ms']:.0f} | {r['sweep_cpu_s']:.1f} |")
    if not args.no_seeds:
        seeds = seeds_loop(frames, index, min(args.seconds, 15))
        print(f"seeds' per-frame loop (HOG upsample 1, encode every face every frame), one station: {seeds:.1f} frames/s")
        print(f"ours / seeds (1 station): {rows[0]['fps_station'] / seeds:.1f}x")


if __name__ == "__main__":
    main()
