"""Load test of the dashboard's alert intake: N stations post alerts at once over loopback.

Starts `python -m dashboard serve` on a temporary SQLite file (or --db URL), gives every station its
own token, posts `--alerts` opening alerts per station from one thread per station (plus re-deliveries
of some events, which must come back as duplicates), then prints alerts/s and latency percentiles and
checks that the database holds exactly what was sent.

    .venv/bin/python -m bench.alerts_load                      # 20 stations x 50 alerts, SQLite
    .venv/bin/python -m bench.alerts_load --db mysql+pymysql://root@127.0.0.1:3306/test
"""
from __future__ import annotations

import argparse
import io
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import requests

from tests.procs import free_port

REPO = Path(__file__).resolve().parents[1]


def make_jpeg() -> bytes:
    """A 640x480 JPEG (~30 KB), about what the recognizer sends as evidence."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (640, 480), (70, 90, 120))
    draw = ImageDraw.Draw(img)
    for i in range(0, 640, 16):
        draw.line((i, 0, 640 - i, 480), fill=(i % 255, 140, 200 - i % 200))
    draw.ellipse((240, 120, 400, 340), fill=(225, 185, 150))
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=85)
    return out.getvalue()




def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", help="SQLAlchemy URL (default: a temporary SQLite file)")
    ap.add_argument("--stations", type=int, default=20)
    ap.add_argument("--alerts", type=int, default=50, help="alerts per station")
    ap.add_argument("--redeliver-every", type=int, default=10, help="re-send every Nth event (must be a duplicate); 0: never")
    args = ap.parse_args()

    from dashboard import db as dbmod
    from dashboard import station_tokens

    tmp = tempfile.TemporaryDirectory(prefix="facemon-bench-")
    url = args.db or f"sqlite:///{Path(tmp.name) / 'bench.sqlite3'}"
    run_id = uuid.uuid4().hex[:6]
    stations = [f"bench-{run_id}-{i:02d}" for i in range(args.stations)]
    engine = dbmod.make_engine(url)
    dbmod.upgrade(engine)
    factory = dbmod.make_session_factory(engine)
    with factory() as s:
        tokens = {st: station_tokens.create_token(s, st, "station") for st in stations}

    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO), "FACEMON_DASHBOARD_LOG_LEVEL": "WARNING"}
    server = subprocess.Popen([sys.executable, "-m", "dashboard", "--db", url, "serve", "--port", str(port)],
                              cwd=tmp.name, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                if requests.get(f"{base}/healthz", timeout=1).ok:
                    break
            except requests.ConnectionError:
                time.sleep(0.05)
        else:
            raise SystemExit("the dashboard did not start")

        image = make_jpeg()
        latencies: list[float] = []
        results = {"created": 0, "duplicate": 0, "errors": 0}
        lock = threading.Lock()
        start_gate = threading.Barrier(len(stations))

        def station_worker(station: str) -> None:
            session = requests.Session()
            session.headers["Authorization"] = f"Bearer {tokens[station]}"
            mine: list[float] = []
            counts = {"created": 0, "duplicate": 0, "errors": 0}
            start_gate.wait()
            for n in range(args.alerts):
                meta = {"event_id": uuid.uuid4().hex, "alert_id": uuid.uuid4().hex, "station_id": station,
                        "login_name": "bench", "type": "unknown_face", "state": "open",
                        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()), "details": {"n": n}}
                sends = 2 if args.redeliver_every and n % args.redeliver_every == 0 else 1
                for attempt in range(sends):
                    t0 = time.perf_counter()
                    resp = session.post(f"{base}/api/alerts", timeout=30,
                                        files={"meta": (None, json.dumps(meta)), "image": ("e.jpg", image, "image/jpeg")})
                    mine.append(time.perf_counter() - t0)
                    want = (201, "created") if attempt == 0 else (200, "duplicate")
                    if (resp.status_code, resp.json().get("status")) == want:
                        counts[want[1]] += 1
                    else:
                        counts["errors"] += 1
                        print(f"unexpected answer for {station}: {resp.status_code} {resp.text[:200]}", file=sys.stderr)
            with lock:
                latencies.extend(mine)
                for k, v in counts.items():
                    results[k] += v

        threads = [threading.Thread(target=station_worker, args=(st,)) for st in stations]
        t_start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - t_start
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(15)

    import sqlalchemy as sa

    from dashboard.models import Alert, AlertEvent

    with factory() as s:
        in_db = s.scalar(sa.select(sa.func.count()).select_from(Alert).where(Alert.station_id.in_(stations)))
        events = s.scalar(sa.select(sa.func.count()).select_from(AlertEvent).where(
            AlertEvent.alert_id.in_(sa.select(Alert.alert_id).where(Alert.station_id.in_(stations)))))
    engine.dispose()
    sent = args.stations * args.alerts
    ms = [x * 1000 for x in latencies]
    rows = [
        ("database", dbmod.safe_url(url).split("?")[0] if args.db else "SQLite (temporary file)"),
        ("stations x alerts", f"{args.stations} x {args.alerts} = {sent} (+{results['duplicate']} re-deliveries)"),
        ("evidence JPEG", f"{len(image) / 1024:.1f} KiB"),
        ("wall time", f"{elapsed:.2f} s"),
        ("requests/s", f"{len(latencies) / elapsed:.1f}"),
        ("alerts/s", f"{sent / elapsed:.1f}"),
        ("latency p50", f"{percentile(ms, 50):.1f} ms"),
        ("latency p95", f"{percentile(ms, 95):.1f} ms"),
        ("latency p99", f"{percentile(ms, 99):.1f} ms"),
        ("latency mean / max", f"{statistics.fmean(ms):.1f} / {max(ms):.1f} ms"),
        ("created / duplicate / errors", f"{results['created']} / {results['duplicate']} / {results['errors']}"),
        ("alerts in database", f"{in_db} (sent {sent})"),
        ("events in database", f"{events} (unique events sent {sent})"),
    ]
    width = max(len(k) for k, _ in rows)
    print(f"{'metric'.ljust(width)} | value\n{'-' * width}-+-{'-' * 40}")
    for k, v in rows:
        print(f"{k.ljust(width)} | {v}")
    ok = in_db == sent and events == sent and results["errors"] == 0 and results["created"] == sent
    print("result: OK, nothing lost, nothing doubled" if ok else "result: MISMATCH")
    tmp.cleanup()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
