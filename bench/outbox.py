"""Outbox figures: put() latency in the station thread, and how fast a backlog drains into a real dashboard.

    .venv/bin/python -m bench.outbox [--events 500]

Starts the dashboard (`python -m dashboard serve`) on a free loopback port with a temporary SQLite file,
fills the outbox while the dashboard is down (real 43 KB JPEG per opening event), starts it and times
the drain; then checks the dashboard holds every event exactly once. Prints a table.
"""
from __future__ import annotations

import argparse
import logging
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

from recognizer.alerting.outbox import Outbox, OutboxConfig
from shared.alert_wire import AlertEvent
from recognizer.alerting.sinks import DashboardSink, DashboardTarget
from tests.procs import free_port

log = logging.getLogger("bench.outbox")
TOKEN = "bench-recognizer-service-token-0001"




def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=500)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    jpeg = (REPO / "tests" / "fixtures" / "stranger_kit.jpg").read_bytes()
    with tempfile.TemporaryDirectory() as tmp:
        db = f"sqlite:///{tmp}/dashboard.sqlite3"
        py = sys.executable
        subprocess.run([py, "-m", "dashboard", "--db", db, "--log-level", "WARNING", "add-station", "--station-id", "recognizer",
                        "--kind", "service", "--token", TOKEN], cwd=REPO, check=True, stdout=subprocess.DEVNULL)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        box = Outbox(OutboxConfig(path=Path(tmp) / "outbox.sqlite3", backoff_max_s=2.0),
                     [DashboardSink(DashboardTarget(url, TOKEN))])
        box.start()
        put_ms = []
        events = []
        for i in range(args.events):
            alert = uuid.uuid4().hex
            state = ("open", "update", "closed")[i % 3]
            ev = AlertEvent(uuid.uuid4().hex, alert, f"desk-{i % 20:02d}", "alice", "unknown_face", state, time.time(),
                            time.time() if state == "closed" else None, {"n": i},
                            image=jpeg if state == "open" else None, best_image=jpeg if state == "update" else None)
            events.append(ev)
            t = time.perf_counter()
            box.put(ev)
            put_ms.append((time.perf_counter() - t) * 1000)
        server = subprocess.Popen([py, "-m", "dashboard", "--db", db, "--log-level", "WARNING", "serve", "--host", "127.0.0.1",
                                   "--port", str(port)], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.time() + 30
            while time.time() < deadline:
                try:
                    urllib.request.urlopen(f"{url}/healthz", timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.1)
            t0 = time.time()
            ok = box.flush(600)
            drain = time.time() - t0
        finally:
            box.stop()
            server.terminate()
            server.wait(timeout=10)
        with sqlite3.connect(f"{tmp}/dashboard.sqlite3") as conn:
            stored = [r[0] for r in conn.execute("SELECT event_id FROM alert_events")]
    q = statistics.quantiles(put_ms, n=100)
    lost = len({e.event_id for e in events} - set(stored))
    print(f"events {args.events} (1/3 with a {len(jpeg) // 1024} KB JPEG), dashboard down while queued")
    print(f"put():  p50 {q[49]:.2f} ms  p99 {q[98]:.2f} ms  max {max(put_ms):.2f} ms")
    print(f"drain after the dashboard came up (incl. its back-off wait): {drain:.1f} s = {args.events / drain:.0f} events/s")
    print(f"stored {len(stored)}, lost {lost}, doubled {len(stored) - len(set(stored))}, flushed {ok}")
    return 0 if ok and not lost and len(stored) == len(set(stored)) == args.events else 1


if __name__ == "__main__":
    sys.exit(main())
