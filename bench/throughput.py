"""Throughput and latency of the recognizer: 1..N stations streaming a real 640x480 clip at camera rate.

Measures what users run: the recognizer's own defaults (detector hog+cnn with its sweep process, liveness on,
detection near tracks, the fair share told to each edge). Each simulated station behaves like the edge: a 30 fps
camera, at most `--in-flight` frames outstanding, newer frames dropped (never queued) while the window is full,
and sends spaced to the `max_fps` the recognizer tells it (shared/pacing.py, as edge/link.py: a frame due a little
before the pacer allows waits for it; a recognizer that says nothing is not paced). The simulated stations run in
a process of their own, so they neither take the recognizer's GIL nor count in its CPU. Prints, per station count:
frames/s of each station (min / median / max across stations, and the slowest station as a share of the mean:
fairness), frames/s summed, latency p50/p95/p99 (send → reply, all stations' frames; p95/p99 also without the
row's first 5 s, the stations' start: first encodings of every new face), frames dropped at the edge,
the recognizer's CPU per frame (main process + encoder workers + sweep process) and the simulated edges' apart,
and the recognizer's memory (RSS of the main process, the encoder workers and the sweep process); then issue 17's
goals, met or not. Also runs the seeds' per-frame loop (HOG upsample 1 + encode every face on every frame).

    nice .venv/bin/python -m bench.throughput      # the defaults: 1, 16 and 32 stations, 20 s each (~2 min)
    .venv/bin/python -m bench.throughput --stations 1 16 32 --seconds 20 --no-seeds
    .venv/bin/python -m bench.throughput --detectors hog hog+cnn   # side by side
    PYTHONPATH=/path/to/older/tree .venv/bin/python bench/throughput.py ...   # the same bench on older code

Settings an older tree lacks (station_fps, regions) are left out there, so before and after run the same bench.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]

from recognizer.app import RecognizerApp, RecognizerSettings
from recognizer.identity.index import save_index
from recognizer.server.stations import ServerConfig
from recognizer.vision.detect import DETECTORS, EngineConfig

try:
    from recognizer.identity.enrol import build_index
    from recognizer.station.pipeline import PipelineConfig
except ModuleNotFoundError:  # a tree from before issue 16's floor plan, run with PYTHONPATH (see above)
    from recognizer.identity.enroll import build_index
    from recognizer.vision.pipeline import PipelineConfig
from shared import protocol
from shared.stream import MessageStream

try:  # an older tree (before pacing) has no pacer: its stations are never paced anyway
    from shared.pacing import Pacer, rate_from_peer
except ImportError:  # pragma: no cover - bench on old code only
    Pacer = None

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
    """One simulated edge (see `_station`); a station that could not run counts as serving nothing, with why."""
    try:
        _station(addr, name, token, frames, seconds, fps, in_flight, out)
    except (OSError, AssertionError, protocol.ProtocolError) as exc:
        logging.getLogger("bench.throughput").warning("station %s failed: %s", name, exc)
        out.update(replies=0, elapsed=seconds, latencies=[], settled=[], dropped=0, paced=0, rate=0.0, failed=True)


def _station(addr, name: str, token: str, frames: list[bytes], seconds: float, fps: float, in_flight: int, out: dict) -> None:
    """One simulated edge: camera at `fps`, bounded window, stale frames dropped, sends paced to `max_fps`."""
    stream = MessageStream(socket.create_connection(addr, timeout=30))
    hello = protocol.hello(name, "bench", token)
    if not ANNOTATED[0]:  # as the edge by default: it draws the boxes itself (an older recognizer ignores this)
        hello.header["annotate"] = False
    stream.send(hello)
    welcome = stream.recv()
    assert welcome.kind == protocol.MessageKind.WELCOME
    pacer = Pacer(rate_from_peer(welcome.header.get("max_fps"))) if Pacer is not None else None
    rates: list[float] = []
    window = threading.Semaphore(in_flight)
    sent: dict[int, float] = {}
    lat: list[float] = []
    settled: list[float] = []  # latencies of the frames sent after the row's first SETTLE_S seconds
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
                t_sent = sent.pop(seq)
                lat.append(t - t_sent)
                if t_sent - start >= SETTLE[0]:
                    settled.append(t - t_sent)
                replies[0] += 1
            if pacer is not None and "max_fps" in msg.header:
                pacer.set_rate(rate_from_peer(msg.header["max_fps"]))
                rates.append(pacer.rate)
            window.release()
            if done.is_set() and not sent:
                return

    start = time.perf_counter()
    rx = threading.Thread(target=receive, daemon=True)
    rx.start()
    seq = dropped = paced = 0
    next_t = start
    while time.perf_counter() - start < seconds:
        next_t += 1.0 / fps
        delay = next_t - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        wait = pacer.wait_s(time.perf_counter()) if pacer is not None else 0.0
        if wait >= 1.0 / fps:
            paced += 1  # the recognizer asked for fewer frames: this camera frame is not sent
            continue
        if wait > 0:  # due before the next camera frame: the edge waits and sends this one (edge/link.py)
            time.sleep(wait)
        if not window.acquire(blocking=False):
            dropped += 1
            continue
        seq += 1
        now = time.perf_counter()
        sent[seq] = now
        if pacer is not None:
            pacer.sent(now)
        stream.send(protocol.frame(seq, time.time(), frames[seq % len(frames)]))
    elapsed = time.perf_counter() - start
    done.set()
    rx.join(timeout=10)
    stream.close()
    out.update(replies=replies[0], elapsed=elapsed, latencies=lat, settled=settled, dropped=dropped, paced=paced,
               rate=rates[-1] if rates else 0.0)


SETTLE_S = 5.0  # latency is also given for the frames sent after this much of a row (past the stations' start)
SETTLE = [SETTLE_S]  # in the simulated edges' process: `run_stations(settle_s=...)`
ANNOTATED = [False]  # whether the simulated edges ask for the annotated picture (--recognizer-draws)


def _stations_process(addr, n: int, token: str, frames: list[bytes], seconds: float, fps: float, in_flight: int,
                      start_at: float, conn, annotated: bool = False, settle_s: float = SETTLE_S) -> None:
    """The simulated edges of one row, in a process of their own (see `run_stations`); sends back their results
    and this process's CPU seconds while they ran."""
    logging.basicConfig(level=logging.WARNING)
    ANNOTATED[0], SETTLE[0] = annotated, settle_s
    results = [dict() for _ in range(n)]
    tag = time.monotonic_ns() % 100000
    threads = [threading.Thread(target=station, args=(addr, f"bench-{n}-{i}-{tag}", token, frames, seconds, fps,
                                                      in_flight, results[i]), daemon=True) for i in range(n)]
    time.sleep(max(0.0, start_at - time.time()))
    cpu0 = time.process_time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    conn.send((results, time.process_time() - cpu0))
    conn.close()


def run_stations(app, n: int, frames, seconds, fps, in_flight, token, pids: list[int],
                 settle_s: float = SETTLE_S) -> dict:
    """`n` simulated edges against `app` for `seconds`, in a process of their own, so that their sockets, JSON and
    threads neither share the recognizer's GIL nor count in its CPU (reported apart: `edge_cpu_ms`)."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")  # never fork the recognizer's threads
    ours, theirs = ctx.Pipe(duplex=False)
    start_at = time.time() + 3.0  # the process is started and has the frames by then
    proc = ctx.Process(target=_stations_process, args=(app.server.address, n, token, frames, seconds, fps, in_flight,
                                                       start_at, theirs, ANNOTATED[0], settle_s), daemon=True)
    proc.start()
    theirs.close()
    time.sleep(max(0.0, start_at - time.time()))
    cpu0 = cpu_s(pids)
    if not ours.poll(seconds + 120):
        proc.kill()
        raise SystemExit(f"the {n} simulated stations did not report within {seconds + 120:.0f} s")
    cpu1 = cpu_s(pids)
    results, edge_cpu = ours.recv()
    proc.join(timeout=10)
    lat = np.array([x for r in results for x in r["latencies"]] or [float("nan")]) * 1e3
    settled = np.array([x for r in results for x in r["settled"]] or [float("nan")]) * 1e3
    per_station = [r["replies"] / r["elapsed"] for r in results]
    return {
        "stations": n,
        "fps_station": float(np.mean(per_station)),
        "fps_min": float(np.min(per_station)),
        "fps_median": float(np.median(per_station)),
        "fps_max": float(np.max(per_station)),
        "fairness": float(np.min(per_station) / max(np.mean(per_station), 1e-9)),
        "told_fps": float(np.median([r["rate"] for r in results])),
        "paced": sum(r["paced"] for r in results),
        "fps_total": float(np.sum(per_station)),
        "failed": sum(1 for r in results if r.get("failed")),
        "p50": float(np.percentile(lat, 50)),
        "p95": float(np.percentile(lat, 95)),
        "p99": float(np.percentile(lat, 99)),
        "p95_settled": float(np.percentile(settled, 95)),
        "p99_settled": float(np.percentile(settled, 99)),
        "in_flight": in_flight,
        "dropped": sum(r["dropped"] for r in results),
        "frames": sum(r["replies"] for r in results),
        "recognizer_cpu_s": cpu1 - cpu0,
        "edge_cpu_ms": edge_cpu * 1e3 / max(sum(r["replies"] for r in results), 1),
    }


def _known(cls, **values) -> dict:
    """The given settings that `cls` (a config dataclass) has and that were set: an older tree lacks some."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in values.items() if v is not None and k in names}


def seeds_loop(frames: list[bytes], index, seconds: float) -> float:
    """The seeds' per-frame loop: HOG with upsample 1, encode every face every frame, compare at 0.6."""
    from recognizer.tools.seeds import MatchParams, vote
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


def print_goals(rows: list[dict]) -> None:
    """Issue 17's goals, each with the row that shows it (first face count and detector of the run)."""
    by_n = {r["stations"]: r for r in rows if r["faces"] == rows[0]["faces"] and r["detector"] == rows[0]["detector"]}

    def line(goal: str, measured: str, ok: bool) -> None:
        print(f"| {goal} | {measured} | {'met' if ok else 'NOT met'} |")

    print()
    print(f"| goal (issue 17; {rows[0]['detector']}, {rows[0]['faces']} face per frame) | measured | |")
    print("|---|---|---|")
    if 1 in by_n:
        r = by_n[1]
        line("1 station: camera-bound, >= 29 frames/s", f"{r['fps_total']:.1f} frames/s", r["fps_total"] >= 29)
    if 16 in by_n:
        r = by_n[16]
        line("16 stations: >= 160 frames/s summed", f"{r['fps_total']:.1f}", r["fps_total"] >= 160)
        line("16 stations: every station >= 10 frames/s", f"slowest {r['fps_min']:.1f}", r["fps_min"] >= 10)
        line("16 stations: latency p95 <= 250 ms (every frame)",
             f"{r['p95']:.0f} ms ({r['p95_settled']:.0f} after the first {SETTLE_S:.0f} s)", r["p95"] <= 250)
        rss = r["rss_main"] + r["rss_workers"] + r["rss_sweep"]
        line("16 stations: recognizer memory <= 1 GB (main + workers + sweep)", f"{rss:.0f} MB", rss <= 1024)
    if 32 in by_n:
        r = by_n[32]
        line("32 stations (overload): slowest >= 80 % of the mean", f"{r['fairness']:.2f}", r["fairness"] >= 0.8)
        # a frame waits at most for the window's frames before it: in_flight frames at the rate a station is served
        window_ms = r["in_flight"] * 1e3 / max(r["fps_median"], 1e-9)
        line(f"32 stations (overload): latency p99 <= the in-flight window ({r['in_flight']} frames at the median "
             f"station's rate: {window_ms:.0f} ms)", f"{r['p99']:.0f} ms ({r['p99_settled']:.0f} after the first "
             f"{SETTLE_S:.0f} s)", r["p99"] <= window_ms)
    print(f"(load average {os.getloadavg()[0]:.1f} at the end; the machine's other programs share its cores)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clip", type=Path, default=WEBCAM_CLIP if WEBCAM_CLIP.exists() else FALLBACK_CLIP)
    p.add_argument("--stations", type=int, nargs="+", default=[1, 16, 32])
    p.add_argument("--seconds", type=float, default=20.0, help="per station-count run")
    p.add_argument("--fps", type=float, default=30.0, help="simulated camera rate per station")
    p.add_argument("--in-flight", type=int, default=2)
    p.add_argument("--downscale", type=float, default=1.0)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--faces", type=int, nargs="+", default=[1], choices=[1, 2, 4],
                   help="faces per frame (the clip tiled: 2 = 1280x480, 4 = 1280x960)")
    p.add_argument("--detectors", nargs="+", default=["hog+cnn"], choices=DETECTORS,
                   help="run the whole set once per detector mode, one after the other in this run (side by side); "
                        "default: the recognizer's own default, hog+cnn")
    p.add_argument("--station-fps", type=float, default=None, help="the recognizer's --station-fps (default: its own)")
    p.add_argument("--max-station-fps", type=float, default=None, help="the recognizer's --max-station-fps")
    p.add_argument("--full-detect-every", type=int, default=None,
                   help="the recognizer's --full-detect-every (1: HOG on the whole frame every frame)")
    p.add_argument("--sweep-budget", type=float, default=None,
                   help="the recognizer's --sweep-budget (most of one core the CNN sweeps may use; default: its own)")
    p.add_argument("--switch-interval", type=float, default=None,
                   help="sys.setswitchinterval for the recognizer's process (Python's default 0.005 s): how long a "
                        "station thread may hold the GIL before another waiting one gets it")
    p.add_argument("--no-liveness", action="store_true",
                   help="liveness off (what the recognizer did before issue 9 fixed it: it never ran)")
    p.add_argument("--no-seeds", action="store_true", help="skip the seeds' loop")
    p.add_argument("--recognizer-draws", action="store_true",
                   help="the simulated edges ask for the annotated picture in every RESULT (edges before issue 17's "
                        "`annotate` option); default: they draw the boxes themselves, as the edge does")
    p.add_argument("--mem-every", type=float, default=0, help="also print memory every N seconds (soak runs)")
    p.add_argument("--debug", nargs="+", default=[], metavar="LOGGER",
                   help="these loggers at debug level, e.g. recognizer.server.pacing (the share's every change)")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    for name in args.debug:
        logging.getLogger(name).setLevel(logging.DEBUG)
    ANNOTATED[0] = args.recognizer_draws
    if args.switch_interval is not None:
        sys.setswitchinterval(args.switch_interval)

    frames_by_faces = {k: load_frames(args.clip, 300 if k > 1 else 600, faces=k) for k in args.faces}
    frames = frames_by_faces[args.faces[0]]
    tmp = Path(tempfile.mkdtemp(prefix="facemon-bench-"))
    from recognizer.vision.detect import FaceEngine

    index, _ = build_index(FaceEngine(), REPO / "known_faces")
    save_index(index, tmp / "encodings")
    token = "bench"
    rows = []
    server_extra = _known(ServerConfig, station_fps=args.station_fps, max_station_fps=args.max_station_fps,
                          max_stations=max(max(args.stations), 32),
                          # every simulated station connects from 127.0.0.1 with the shared token: lift the cap
                          # on credential-less stations per address (issue 15), which would refuse all beyond 8
                          max_stations_per_address=0)
    pipeline_extra = {}
    if args.full_detect_every is not None:
        from recognizer.vision.regions import RegionParams

        pipeline_extra["regions"] = RegionParams(full_every=args.full_detect_every)
    settings_extra = {}
    if args.sweep_budget is not None:
        from recognizer.vision.sweep import SweepParams

        settings_extra["sweep"] = SweepParams(budget=args.sweep_budget)
    for detector in args.detectors:
        app = RecognizerApp(RecognizerSettings(**settings_extra,
            server=ServerConfig(host="127.0.0.1", port=0, token=token, max_in_flight=args.in_flight, **server_extra),
            engine=EngineConfig(detector=detector),
            pipeline=PipelineConfig(detect_scale=args.downscale, liveness=not args.no_liveness, **pipeline_extra),
            index_dir=tmp / "encodings", known_faces=tmp / "kf", workers=args.workers,
        ))
        app.start()
        worker_pids = [pr.pid for pr in app.pool._pool._processes.values()]  # noqa: SLF001 (bench only)
        sweep_pids = [pr.pid for pr in app.sweeper._pool._processes.values()] if app.sweeper is not None else []  # noqa: SLF001
        pids = [os.getpid()] + worker_pids + sweep_pids
        import recognizer

        print(f"[{detector}] code: {Path(recognizer.__file__).parents[1]}; clip: {args.clip.name} ({len(frames)} frames "
              f"used, 640x480), camera {args.fps:.0f} fps per station, in flight {args.in_flight}, downscale "
              f"{args.downscale}, {app.pool.workers} encoder workers, edges "
              f"{'ask for the annotated picture' if args.recognizer_draws else 'draw their boxes (annotate false; a recognizer from before ignores it)'}"
              f", {os.cpu_count()} CPUs, load average "
              f"{os.getloadavg()[0]:.1f}", flush=True)
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
                sweep0 = cpu_s(sweep_pids)
                row = run_stations(app, n, kframes, args.seconds, args.fps, args.in_flight, token, pids)
                row["faces"], row["detector"] = k, detector
                row["rss_main"], row["rss_workers"], row["rss_sweep"] = (
                    rss_mb([os.getpid()]), rss_mb(worker_pids), rss_mb(sweep_pids))
                row["load"] = os.getloadavg()[0]
                # the recognizer's CPU (main process, encoders, sweep) per frame served; the simulated edges apart
                row["cpu_ms"] = row["recognizer_cpu_s"] * 1e3 / max(row["frames"], 1)
                row["sweep_cpu_s"] = cpu_s(sweep_pids) - sweep0
                rows.append(row)
        mem1 = rss_mb(pids)
        sampling.set()
        app.stop()
        print(f"[{detector}] recognizer memory (main + workers + sweep): {mem0:.0f} MB before, {mem1:.0f} MB after")
    shutil.rmtree(tmp, ignore_errors=True)

    print()
    print("| detector | faces/frame | stations | frames/s per station min / median / max | slowest / mean | "
          f"frames/s summed | told fps | latency p50 ms | p95 ms | p99 ms | p95 / p99 ms after {SETTLE_S:.0f} s | "
          "dropped at edge | paced at edge | "
          "recognizer CPU ms per frame | edges' CPU ms per frame | sweep CPU s | RSS MB main + workers + sweep | load |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['detector']} | {r['faces']} | {r['stations']} | {r['fps_min']:.1f} / {r['fps_median']:.1f} / "
              f"{r['fps_max']:.1f} | {r['fairness']:.2f} | {r['fps_total']:.1f} | {r['told_fps']:.1f} | "
              f"{r['p50']:.0f} | {r['p95']:.0f} | {r['p99']:.0f} | {r['p95_settled']:.0f} / {r['p99_settled']:.0f} | "
              f"{r['dropped']} | {r['paced']} | {r['cpu_ms']:.1f} | "
              f"{r['edge_cpu_ms']:.1f} | "
              f"{r['sweep_cpu_s']:.1f} | {r['rss_main']:.0f} + {r['rss_workers']:.0f} + {r['rss_sweep']:.0f} = "
              f"{r['rss_main'] + r['rss_workers'] + r['rss_sweep']:.0f} | {r['load']:.1f} |"
              + (f" {r['failed']} stations could not connect |" if r["failed"] else ""))
    print_goals(rows)
    if not args.no_seeds:
        seeds = seeds_loop(frames, index, min(args.seconds, 15))
        print(f"seeds' per-frame loop (HOG upsample 1, encode every face every frame), one station: {seeds:.1f} frames/s")
        print(f"ours / seeds (1 station): {rows[0]['fps_station'] / seeds:.1f}x")


if __name__ == "__main__":
    main()
