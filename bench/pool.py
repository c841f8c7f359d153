"""Pool figures: failover time over repeated SIGKILLs, gallery propagation, frames/s per node, the capacity model.

    .venv/bin/python -m bench.pool [--kills 10] [--edges 6] [--nodes 3] [--seconds 15]

Runs the pool of tests/pool on loopback (dashboard, HAProxy with deploy/haproxy.cfg, N recognizer nodes with
the HOG detector and one encoder process each, edges streaming a 320x240 frame of a stranger through the
balancer). Every node shares this machine's CPUs, so the summed frames/s is this box's, not N machines'.

- failover: the node serving most stations is SIGKILLed; the time from the kill until every station it served
  has a new result from another node (and, printed per kill, until each was welcomed by one: the rest is the
  first frame's processing on a CPU the nodes share). It is then restarted (as systemd would) and taken back by HAProxy.
- alerts: every event id in every node's outbox against the dashboard's alert_events (lost = sent but not
  stored, duplicated = stored twice), and incidents open twice for one desk and type.
- propagation: an encoding posted to the dashboard's gallery until every node's /healthz reports that change
  (data), and a Capture through one desk until every desk's next results name the person (recognition).
- frames/s: edges at 30 fps (2 frames in flight each) for --seconds, before the kills (stations spread evenly);
  results per node.
"""
from __future__ import annotations

import argparse
import base64
import json
import logging
import statistics
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path

import numpy as np

from tests.pool.cluster import SERVICE_TOKEN, Pool, haproxy_missing, stranger_frame, wait_until

log = logging.getLogger("bench.pool")


def spread_line(pool: Pool) -> str:
    return " ".join(f"{k}={v}" for k, v in sorted(pool.spread().items()))


def failovers(pool: Pool, kills: int) -> list[float]:
    times = []
    for i in range(kills):
        spread = pool.spread()
        victim = pool.node_of(max(spread, key=spread.get))
        moved = [e for e in pool.edges if e.node() == victim.name]
        before = {e.station: e.status()["results"] for e in moved}
        t0 = time.monotonic()
        victim.proc.kill()
        welcomed: dict[str, float] = {}

        def back() -> bool:
            for e in moved:
                if e.station not in welcomed and e.node() not in (None, victim.name):
                    welcomed[e.station] = time.monotonic() - t0
            return len(welcomed) == len(moved) and all(e.status()["results"] > before[e.station] for e in moved)

        took = wait_until("stations back", back, 60, 0.01)
        times.append(took)
        print(f"  kill {i + 1}: {victim.name} with {len(moved)} station(s): every one welcomed by a live node in "
              f"{max(welcomed.values()):.2f} s, every one with a result in {took:.2f} s ({spread_line(pool)})",
              flush=True)
        pool.start_node(victim)
        pool.wait_balanced_in(victim)
    return times


def post_encoding(pool: Pool, person: str) -> int:
    vec = np.random.default_rng().normal(0, 0.09, 128).astype("<f4")
    body = json.dumps({"person": person, "vector": base64.b64encode(vec.tobytes()).decode(),
                       "model": "dlib_face_recognition_resnet_model_v1", "source": "bench",
                       "photo_sha256": f"{abs(hash(person)):064x}"[-64:], "enrolled_by": "bench"}).encode()
    req = urllib.request.Request(f"{pool.dashboard_url}/api/gallery/encodings", body, method="POST", headers={
        "Authorization": f"Bearer {SERVICE_TOKEN}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:  # noqa: S310 - loopback
        return int(json.loads(r.read())["change"]["seq"])


def data_propagation(pool: Pool, n: int) -> list[float]:
    times = []
    for i in range(n):
        seq = post_encoding(pool, f"bench-person-{i}-{time.time_ns()}")
        times.append(wait_until("every node has it", lambda: all(
            (node.health()[1].get("gallery") or {}).get("seq", 0) >= seq for node in pool.nodes), 10, 0.005))
        time.sleep(0.3)
    return times


def recognition_propagation(pool: Pool, fps: float) -> tuple[float, dict[str, float]]:
    for e in pool.edges:
        e.set_fps(fps)
    time.sleep(3)
    desk = pool.edges[0]
    grant = pool.issue_grant(desk.station, "kit")
    t0 = time.monotonic()
    answer = desk.link.enrol("kit", timeout=30, grant=grant)
    if not answer.get("ok"):
        raise SystemExit(f"the Capture failed: {answer}")
    answered = time.monotonic() - t0
    per_desk: dict[str, float] = {}
    t1 = time.monotonic()
    while len(per_desk) < len(pool.edges) and time.monotonic() - t1 < 30:
        for e in pool.edges:
            if e.station not in per_desk and e.names() == ["kit"]:
                per_desk[e.station] = time.monotonic() - t1
        time.sleep(0.01)
    return answered, per_desk


def throughput(pool: Pool, seconds: float) -> dict[str, float]:
    for e in pool.edges:
        e.set_fps(30.0)
    time.sleep(3)
    start = {e.station: (e.node(), e.status()["results"]) for e in pool.edges}
    time.sleep(seconds)
    per_node: Counter = Counter()
    for e in pool.edges:
        node, first = start[e.station]
        if node is not None and e.node() == node:
            per_node[node] += (e.status()["results"] - first) / seconds
    return dict(per_node)


def summary(xs: list[float]) -> str:
    return f"min {min(xs):.2f} / median {statistics.median(xs):.2f} / max {max(xs):.2f} s (n={len(xs)})"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kills", type=int, default=10)
    p.add_argument("--nodes", type=int, default=3, choices=(2, 3))
    p.add_argument("--edges", type=int, default=6)
    p.add_argument("--seconds", type=float, default=15.0)
    p.add_argument("--camera-fps", type=float, default=10.0, help="desk camera frames/s while timing recognition")
    p.add_argument("--desk-fps", type=float, default=5.0, help="frames/s one desk needs (capacity model)")
    p.add_argument("--node-fps", type=float, default=0.0,
                   help="frames/s one node gives on its own machine (capacity model; default: measured here)")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if haproxy_missing():
        raise SystemExit(haproxy_missing())
    pool = Pool(Path(tempfile.mkdtemp(prefix="bench-pool-")), nodes_n=args.nodes)
    try:
        t0 = time.monotonic()
        pool.start()
        print(f"pool up in {time.monotonic() - t0:.1f} s: {args.nodes} nodes, HAProxy on :{pool.lb_port}", flush=True)
        pool.add_edges(args.edges, stranger_frame(), fps=4.0)
        wait_until("edges served", lambda: all(e.node() for e in pool.edges), 60)
        print(f"stations: {spread_line(pool)}", flush=True)
        tp = throughput(pool, args.seconds)  # first, while the stations are spread evenly
        for e in pool.edges:
            e.set_fps(4.0)
        time.sleep(3)
        print(f"failover over {args.kills} SIGKILLs:", flush=True)
        fo = failovers(pool, args.kills)
        wait_until("outboxes delivered", lambda: pool.pending_outbox() == 0, 60, 0.2)
        sent = set().union(*pool.outbox_events().values())
        stored = Counter(r[0] for r in pool.query("SELECT event_id FROM alert_events"))
        open_twice = sum(1 for c in Counter(pool.query(
            "SELECT station_id, type FROM alerts WHERE ended_at IS NULL")).values() if c > 1)
        reasons = Counter(json.loads(d).get("closed_by") for d, in pool.query(
            "SELECT details FROM alerts WHERE ended_at IS NOT NULL"))
        lost, dup = len(sent - set(stored)), sum(c - 1 for c in stored.values())
        print(f"data propagation (dashboard -> every node's copy):", flush=True)
        dp = data_propagation(pool, 5)
        answered, per_desk = recognition_propagation(pool, args.camera_fps)
    finally:
        pool.stop()
    total = sum(tp.values())
    node_fps = args.node_fps or (total / max(1, len(tp)))
    print("\n== bench.pool ==")
    print(f"failover (SIGKILL -> every moved station has a result from a live node): {summary(fo)}")
    print(f"alerts over the kills: {len(sent)} events sent by the nodes, {len(set(stored))} stored, lost {lost}, "
          f"duplicated {dup}; incidents open twice for one desk+type: {open_twice}; closed by: {dict(reasons)}")
    print(f"gallery change -> every node: {summary(dp)}")
    if per_desk:
        print(f"Capture -> answer {answered:.2f} s; answer -> each desk names the face (desks at {args.camera_fps:g} "
              f"frames/s; 3 agreeing encodings name a face): {summary(list(per_desk.values()))} "
              f"({len(per_desk)}/{len(pool.edges)} desks)")
    print("frames/s per node (all nodes share this machine's CPUs): "
          + ", ".join(f"{k} {v:.1f}" for k, v in sorted(tp.items())) + f"; summed {total:.1f}")
    print(f"capacity model: desks per node = node frames/s / desk frames/s = {node_fps:.1f} / {args.desk_fps:g} = "
          f"{node_fps / args.desk_fps:.1f}; a site of N nodes (one machine each) serves N x that, keeping one "
          f"node's worth spare for failover: (N - 1) x {node_fps / args.desk_fps:.1f} desks")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
