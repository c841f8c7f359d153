"""Several recognizer processes on one box: does splitting the desks between them serve more frames?

A recognizer's station threads share one process and so one GIL; dlib's 68-point landmarks, the blink checks and
the Python around them hold it, so at 16 desks the recognizer's main process sits at ~100 % of one core while the
box has CPU left (`top`: 99 % main, 20-25 % idle, stop 25). Two recognizer nodes on one box (as the pool runs
them, docs/pool.md) each have their own GIL. This bench starts `--nodes` recognizer processes (`python -m
recognizer`, the product's defaults unless told: hog+cnn, liveness on; `--workers` encoder processes each and the
sweep budget split between them, so the box runs the same total of sweeps), splits `--stations` simulated edges
between them (the same edges as `bench.throughput`, in a process per node) and prints the same figures summed
over the nodes, with the CPU and memory of every process of every node.

    nice .venv/bin/python -m bench.nodes                      # 1 node then 2 nodes, 16 stations, 20 s, 3 runs each
    nice .venv/bin/python -m bench.nodes --nodes 2 --stations 16 32 --seconds 60 --runs 1
"""
from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):
    sys.path.append(str(REPO))

from bench.disk_full import _listening  # noqa: E402
from tests.procs import free_port  # noqa: E402
from bench.throughput import ANNOTATED, SETTLE_S, WEBCAM_CLIP, _stations_process, cpu_s, load_frames, rss_mb  # noqa: E402

TOKEN = "bench"


def _tree(pid: int) -> list[int]:
    """`pid` and every process under it (the node's encoder workers and sweep process)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as fh:
                    todo.extend(int(c) for c in fh.read().split())
        except OSError:
            pass
    return out


def start_nodes(n: int, index: Path, work: Path, workers: int, sweep_budget: float) -> list[tuple[subprocess.Popen, int]]:
    nodes = []
    for i in range(n):
        port = free_port()
        cmd = [sys.executable, "-m", "recognizer", "--host", "127.0.0.1", "--port", str(port), "--token", TOKEN,
               "--station-auth", "shared", "--max-stations-per-address", "0", "--max-stations", "64",
               "--workers", str(workers), "--sweep-budget", f"{sweep_budget / n:.4f}", "--index", str(index),
               "--known-faces", str(work / f"kf{i}"), "--outbox", str(work / f"outbox{i}.sqlite3"),
               "--log-level", "WARNING"]
        log = open(work / f"node{i}.log", "a")
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "PYTHONPATH": str(REPO)})
        nodes.append((proc, port))
    deadline = time.time() + 120
    for proc, port in nodes:
        while not _listening(port):
            if proc.poll() is not None or time.time() > deadline:
                raise SystemExit(f"a recognizer node did not start; see {work}/node*.log")
            time.sleep(0.2)
    time.sleep(2.0)  # the sweep process and encoder workers are up
    return nodes


def stop_nodes(nodes) -> None:
    import signal

    for proc, _ in nodes:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    for proc, _ in nodes:
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def run_row(nodes, stations: int, frames, seconds: float, fps: float, in_flight: int) -> dict:
    """`stations` simulated edges split evenly between `nodes`, each node's in a process of its own."""
    ctx = multiprocessing.get_context("spawn")
    start_at = time.time() + 3.0
    parts = [stations // len(nodes) + (1 if i < stations % len(nodes) else 0) for i in range(len(nodes))]
    pids = [p for proc, _ in nodes for p in _tree(proc.pid)]
    pipes, procs = [], []
    for (proc, port), k in zip(nodes, parts):
        ours, theirs = ctx.Pipe(duplex=False)
        pr = ctx.Process(target=_stations_process, args=(("127.0.0.1", port), k, TOKEN, frames, seconds, fps,
                                                         in_flight, start_at, theirs, ANNOTATED[0], SETTLE_S), daemon=True)
        pr.start()
        theirs.close()
        pipes.append(ours)
        procs.append(pr)
    time.sleep(max(0.0, start_at - time.time()))
    cpu0 = cpu_s(pids)
    results, edge_cpu = [], 0.0
    for ours in pipes:
        if not ours.poll(seconds + 120):
            raise SystemExit("the simulated stations did not report")
        r, c = ours.recv()
        results += r
        edge_cpu += c
    cpu1 = cpu_s(pids)
    for pr in procs:
        pr.join(timeout=10)
    per = [r["replies"] / r["elapsed"] for r in results]
    lat = np.array([x for r in results for x in r["latencies"]] or [float("nan")]) * 1e3
    settled = np.array([x for r in results for x in r["settled"]] or [float("nan")]) * 1e3
    frames_n = sum(r["replies"] for r in results)
    return {"nodes": len(nodes), "stations": stations, "sum": float(np.sum(per)), "min": float(np.min(per)),
            "median": float(np.median(per)), "fair": float(np.min(per) / max(np.mean(per), 1e-9)),
            "p50": float(np.percentile(lat, 50)), "p95": float(np.percentile(lat, 95)),
            "p95s": float(np.percentile(settled, 95)), "p99s": float(np.percentile(settled, 99)),
            "cpu_ms": (cpu1 - cpu0) * 1e3 / max(frames_n, 1), "cores": (cpu1 - cpu0) / seconds,
            "edge_ms": edge_cpu * 1e3 / max(frames_n, 1), "rss": rss_mb(pids), "load": os.getloadavg()[0]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", type=int, nargs="+", default=[1, 2], help="recognizer processes, one set per figure")
    p.add_argument("--stations", type=int, nargs="+", default=[16])
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--runs", type=int, default=3, help="runs of every node count, alternated")
    p.add_argument("--fps", type=float, default=30.0)
    p.add_argument("--in-flight", type=int, default=2)
    p.add_argument("--workers", type=int, default=0, help="encoder processes per node (0: 2 / nodes, at least 1)")
    p.add_argument("--sweep-budget", type=float, default=0.25, help="of one core, for all nodes together")
    p.add_argument("--clip", type=Path, default=WEBCAM_CLIP)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    frames = load_frames(args.clip, 600)
    work = Path(tempfile.mkdtemp(prefix="facemon-nodes-"))
    from recognizer.identity.enrol import build_index
    from recognizer.identity.index import save_index
    from recognizer.vision.detect import FaceEngine

    index, _ = build_index(FaceEngine(), REPO / "known_faces")
    save_index(index, work / "encodings")
    rows = []
    try:
        for run in range(args.runs):
            for n in args.nodes:
                workers = args.workers or max(1, 2 // n)
                nodes = start_nodes(n, work / "encodings", work, workers, args.sweep_budget)
                try:
                    for k in args.stations:
                        row = run_row(nodes, k, frames, args.seconds, args.fps, args.in_flight)
                        row["run"], row["workers"] = run + 1, workers
                        rows.append(row)
                        print(f"run {run + 1}: {n} node(s) x {workers} encoder(s), {k} stations: {row['sum']:.1f} frames/s "
                              f"summed, slowest {row['min']:.1f}, p95 {row['p95']:.0f} ms ({row['p95s']:.0f} after "
                              f"{SETTLE_S:.0f} s), {row['cores']:.2f} cores, RSS {row['rss']:.0f} MB", flush=True)
                finally:
                    stop_nodes(nodes)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def mmm(values: list[float], fmt: str = "{:.1f}") -> str:
        v = sorted(values)
        return " / ".join(fmt.format(x) for x in (v[0], v[len(v) // 2], v[-1]))

    print(f"\n{args.runs} runs, {args.seconds:.0f} s a row, min / median / max:\n")
    print("| nodes | stations | frames/s summed | slowest station | slowest / mean | p50 ms | p95 ms | p95 / p99 ms "
          f"after {SETTLE_S:.0f} s | recognizer CPU ms per frame | cores used | RSS MB (every process) | load |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n in args.nodes:
        for k in args.stations:
            rs = [r for r in rows if r["nodes"] == n and r["stations"] == k]
            print(f"| {n} | {k} | {mmm([r['sum'] for r in rs])} | {mmm([r['min'] for r in rs])} | "
                  f"{mmm([r['fair'] for r in rs], '{:.2f}')} | {mmm([r['p50'] for r in rs], '{:.0f}')} | "
                  f"{mmm([r['p95'] for r in rs], '{:.0f}')} | {mmm([r['p95s'] for r in rs], '{:.0f}')} / "
                  f"{mmm([r['p99s'] for r in rs], '{:.0f}')} | {mmm([r['cpu_ms'] for r in rs])} | "
                  f"{mmm([r['cores'] for r in rs], '{:.2f}')} | {mmm([r['rss'] for r in rs], '{:.0f}')} | "
                  f"{mmm([r['load'] for r in rs])} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
