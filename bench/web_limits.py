"""Web limits under concurrency (issue 15, items 1, 2, 7, 8, 9): prints min/median/max over --runs.

    python -m bench.web_limits                      # this tree
    python -m bench.web_limits --tree /tmp/old      # another checkout of the project (e.g. `git archive` of an
                                                    # older commit), run with this venv's Python

Each run starts the tree's own `python -m dashboard serve` (and `python -m edge` for the edge phase) as real
processes on 127.0.0.1 and measures from outside:

1. sign-in tries checked, N wrong passwords one by one vs N at once, for the dashboard login, the desk check
   (`/api/auth/check`) and the edge sign-in. "Checked" = answers 401 (a password that was verified and found
   wrong); a refusal before checking is 429. For the desk check and the edge also `*_in_db`: the wrong
   passwords the dashboard verified, counted in its `sign_in_failures` table (an old edge gave up after 5 s and
   answered 503 while the dashboard went on hashing). The tests count hashes on the server too.
2. 200 logins of made-up names at once: the dashboard's RSS over idle (sampled every 10 ms) and /healthz answer
   times during the storm, probed from a separate process (so the 200 client threads do not slow the probe).
7. edge sessions (in-process, the tree's `edge.auth.SignIn` with a stub dashboard and an injected clock):
   sessions kept after 1,000 sign-ins, and whether one is still valid 30 days later.
8. `/?endpoint=x` and `/?_method=DELETE` signed in: the status codes.
9. 2,000 idle connections: server threads, RSS over idle, /healthz median with them held, and how many the
   server has closed 10 s later (the new server's idle timeout is set to 5 s for this phase).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Callable

import requests

from tests.procs import REPO, free_port

PASSWORD = "correct-horse-battery"
TOKEN = "bench-desk-01-station-token-000001"


def rss_mb(pid: int) -> float:
    return _status(pid, "VmRSS:") / 1024


def threads_of(pid: int) -> int:
    return int(_status(pid, "Threads:"))


def _status(pid: int, key: str) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key):
                return float(line.split()[1])
    except OSError:
        pass
    return 0.0


def at_once(n: int, send: Callable[[int], object]) -> Counter:
    gate = threading.Barrier(n)
    out: list = []

    def one(i: int) -> None:
        gate.wait()
        try:
            out.append(send(i))
        except requests.RequestException as exc:
            out.append(type(exc).__name__)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return Counter(out)


class Tree:
    """A checkout of the project whose programs are started with this Python, from its own folder."""

    def __init__(self, path: Path, work: Path) -> None:
        self.path, self.work = path, work
        self.procs: list[subprocess.Popen] = []
        self.db: Path = work / "dashboard.sqlite3"

    def run(self, *args: str, env: dict | None = None) -> None:
        subprocess.run([sys.executable, *args], cwd=self.path, env={**os.environ, **(env or {})}, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def start(self, name: str, args: list[str], ready_url: str, env: dict | None = None) -> subprocess.Popen:
        log = open(self.work / f"{name}.log", "w")
        proc = subprocess.Popen([sys.executable, *args], cwd=self.path, env={**os.environ, **(env or {})},
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(proc)
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if requests.get(ready_url, timeout=1).status_code < 500:
                    return proc
            except requests.RequestException:
                time.sleep(0.2)
        raise RuntimeError(f"{name} did not start; see {self.work / (name + '.log')}")

    def stop_all(self) -> None:
        for proc in self.procs:
            try:
                os.killpg(proc.pid, 15)
            except ProcessLookupError:
                pass
        for proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
        self.procs.clear()


def dashboard(tree: Tree, env: dict | None = None) -> tuple[subprocess.Popen, str]:
    tree.db = tree.work / f"dash-{time.time_ns()}.sqlite3"
    db = f"sqlite:///{tree.db}"
    for cmd in (["create-user", "--username", "serial", "--password", PASSWORD, "--role", "staff"],
                ["create-user", "--username", "parallel", "--password", PASSWORD, "--role", "staff"],
                ["create-user", "--username", "esserial", "--password", PASSWORD, "--role", "staff"],
                ["create-user", "--username", "esparallel", "--password", PASSWORD, "--role", "staff"],
                ["create-admin", "--username", "ada", "--password", PASSWORD],
                ["add-station", "--station-id", "desk-01", "--token", TOKEN]):
        tree.run("-m", "dashboard", "--db", db, *cmd)
    port = free_port()
    proc = tree.start("dashboard", ["-m", "dashboard", "--db", db, "serve", "--port", str(port)],
                      f"http://127.0.0.1:{port}/healthz", env)
    return proc, f"http://127.0.0.1:{port}"


def login_form(base: str) -> tuple[str, str]:
    s = requests.Session()
    page = s.get(f"{base}/login", timeout=10).text
    return s.cookies["session"], page.split('name="csrf_token" value="')[1].split('"')[0]


def checked(codes: Counter) -> int:
    return codes.get(401, 0)


def recorded_failures(tree: Tree, username: str) -> int:
    """Wrong passwords the dashboard verified for `username` at a desk: its `sign_in_failures` rows (the same
    table before and after the change), so an edge that gave up waiting (an old one answered 503) still counts."""
    import sqlite3

    time.sleep(2)  # checks still running on the server finish
    with sqlite3.connect(tree.db) as conn:
        return conn.execute("SELECT count(*) FROM sign_in_failures WHERE username = ? AND reason = 'wrong_password'",
                            (username,)).fetchone()[0]


def phase_at_once(tree: Tree, n: int) -> dict:
    _, base = dashboard(tree)
    cookie, csrf = login_form(base)

    def login(user: str, i: int) -> int:
        return requests.post(f"{base}/login", data={"username": user, "password": f"wrong-{i}", "csrf_token": csrf},
                             cookies={"session": cookie}, timeout=120, allow_redirects=False).status_code

    def desk(user: str, i: int) -> int:
        return requests.post(f"{base}/api/auth/check", json={"username": user, "password": f"wrong-{i}"},
                             headers={"Authorization": f"Bearer {TOKEN}"}, timeout=120).status_code

    out = {
        "login_serial": checked(Counter(login("serial", i) for i in range(n))),
        "login_at_once": checked(at_once(n, lambda i: login("parallel", i))),
        "desk_serial": checked(Counter(desk("serial", i) for i in range(n))),
        "desk_at_once": checked(at_once(n, lambda i: desk("parallel", i))),
    }
    edge_port = free_port()
    tree.start("edge", ["-m", "edge", "--source", str(REPO / "samples" / "hamilton_clip.mp4"), "--fps-cap", "2",
                        "--recognizer", f"127.0.0.1:{free_port()}", "--station", "desk-01", "--dashboard-url", base,
                        "--dashboard-token", TOKEN, "--web-port", str(edge_port), "--state-dir", str(tree.work / "edge")],
               f"http://127.0.0.1:{edge_port}/signin")
    ebase = f"http://127.0.0.1:{edge_port}"
    s = requests.Session()
    csrf_e = s.get(f"{ebase}/signin", timeout=10).text.split('name="csrf-token" content="')[1].split('"')[0]
    ecookie = s.cookies["facemon_edge"]

    def edge(user: str, i: int) -> int:
        return requests.post(f"{ebase}/api/signin", json={"username": user, "password": f"wrong-{i}"},
                             headers={"X-CSRF-Token": csrf_e}, cookies={"facemon_edge": ecookie}, timeout=120).status_code

    out["edge_serial"] = checked(Counter(edge("esserial", i) for i in range(n)))
    out["edge_at_once"] = checked(at_once(n, lambda i: edge("esparallel", i)))
    out["desk_at_once_in_db"] = recorded_failures(tree, "parallel")
    out["edge_serial_in_db"] = recorded_failures(tree, "esserial")
    out["edge_at_once_in_db"] = recorded_failures(tree, "esparallel")
    tree.stop_all()
    return out


PROBE = """
import http.client, sys, time
port, seconds = int(sys.argv[1]), float(sys.argv[2])
end, out = time.time() + seconds, []
while time.time() < end:
    t = time.perf_counter()
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        c.request("GET", "/healthz"); c.getresponse().read(); c.close()
    except OSError:  # no answer within 60 s: counted as the time waited
        pass
    out.append(time.perf_counter() - t)
    time.sleep(0.02)
print(" ".join(f"{x:.5f}" for x in out))
"""


def phase_storm(tree: Tree, n: int = 200) -> dict:
    proc, base = dashboard(tree)
    port = int(base.rsplit(":", 1)[1])
    cookie, csrf = login_form(base)
    requests.post(f"{base}/login", data={"username": "warm-up", "password": "x" * 10, "csrf_token": csrf},
                  cookies={"session": cookie}, timeout=60)
    time.sleep(0.5)
    idle = rss_mb(proc.pid)
    peak = [idle]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak.append(rss_mb(proc.pid))
            time.sleep(0.01)

    sampler = threading.Thread(target=sample)
    sampler.start()
    probe = subprocess.Popen([sys.executable, "-c", PROBE, str(port), "6"], stdout=subprocess.PIPE, text=True)
    time.sleep(0.3)
    t0 = time.time()
    at_once(n, lambda i: requests.post(f"{base}/login", data={"username": f"nobody-{i}", "password": "wrong-password",
                                                               "csrf_token": csrf}, cookies={"session": cookie},
                                       timeout=120).status_code)
    storm_s = time.time() - t0
    lat = [float(x) for x in probe.communicate(timeout=120)[0].split()]
    done.set()
    sampler.join()
    tree.stop_all()
    return {"rss_idle_mb": idle, "rss_over_idle_mb": max(peak) - idle, "healthz_median_ms": statistics.median(lat) * 1000,
            "healthz_max_ms": max(lat) * 1000, "storm_s": storm_s}


SESSIONS = """
import json, sys
from edge.auth import AuthSettings, SignIn

class Dash:
    def check(self, username, password, image):
        return 200, {"ok": True, "username": username, "role": "staff", "identity": None}

class Link:
    def set_login(self, login): pass

now = [1000.0]
signin = SignIn(AuthSettings(station="desk-01"), Dash(), Link(), clock=lambda: now[0])
sids = [signin.password("sam", "pw")[1]["sid"] for _ in range(1000)]
kept = len(signin._sessions)
now[0] += 30 * 86400
print(json.dumps({"sessions_after_1000": kept, "valid_after_30_days": signin.session(sids[-1]) is not None}))
"""


def phase_sessions(tree: Tree) -> dict:
    out = subprocess.run([sys.executable, "-c", SESSIONS], cwd=tree.path, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def phase_query(tree: Tree) -> dict:
    _, base = dashboard(tree)
    s = requests.Session()
    page = s.get(f"{base}/login", timeout=10).text
    csrf = page.split('name="csrf_token" value="')[1].split('"')[0]
    s.post(f"{base}/login", data={"username": "ada", "password": PASSWORD, "csrf_token": csrf}, timeout=60)
    out = {"endpoint=x": s.get(f"{base}/?endpoint=x", timeout=10).status_code,
           "_method=DELETE": s.get(f"{base}/?_method=DELETE", timeout=10).status_code}
    tree.stop_all()
    return out


def phase_idle(tree: Tree, n: int = 2000) -> dict:
    import resource
    import socket

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, n + 500)), hard))
    proc, base = dashboard(tree, env={"FACEMON_DASHBOARD_WEB_IDLE_TIMEOUT_S": "5"})
    port = int(base.rsplit(":", 1)[1])

    def healthz_ms() -> float:
        lat = []
        with requests.Session() as s:
            for _ in range(20):
                t = time.perf_counter()
                s.get(f"{base}/healthz", timeout=60)
                lat.append(time.perf_counter() - t)
        return statistics.median(lat) * 1000

    base_ms, idle_rss = healthz_ms(), rss_mb(proc.pid)
    socks = []
    for _ in range(n):
        try:
            socks.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        except OSError:
            break
    time.sleep(2)
    held_ms, threads, rss = healthz_ms(), threads_of(proc.pid), rss_mb(proc.pid)
    time.sleep(10)
    closed = 0
    for sock in socks:
        sock.settimeout(0.01)
        try:
            closed += sock.recv(1) == b""
        except (socket.timeout, BlockingIOError):
            pass
        except OSError:
            closed += 1
        sock.close()
    tree.stop_all()
    return {"connected": len(socks), "server_threads": threads, "rss_over_idle_mb": rss - idle_rss,
            "healthz_base_ms": base_ms, "healthz_held_ms": held_ms, "closed_after_12s": closed}


def summary(name: str, runs: list[dict]) -> None:
    print(f"\n{name} ({len(runs)} runs: min / median / max)")
    for key in runs[0]:
        values = [r[key] for r in runs]
        if all(isinstance(v, bool) for v in values) or not all(isinstance(v, (int, float)) for v in values):
            print(f"  {key:24} {values}")
        else:
            fmt = (lambda v: f"{v:.0f}") if all(float(v).is_integer() for v in values) else (lambda v: f"{v:.1f}")
            print(f"  {key:24} {fmt(min(values))} / {fmt(statistics.median(values))} / {fmt(max(values))}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tree", type=Path, default=REPO, help="checkout to measure (default: this one)")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--tries", type=int, default=30, help="wrong passwords per account in phase 1")
    p.add_argument("--phases", default="1,2,7,8,9")
    args = p.parse_args()
    phases = set(args.phases.split(","))
    results: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="web-limits-") as tmp:
        for run in range(args.runs):
            tree = Tree(args.tree.resolve(), Path(tmp) / f"run{run}")
            tree.work.mkdir()
            try:
                for key, name, fn in (("1", "1. tries checked (401s) of N one by one vs at once", lambda: phase_at_once(tree, args.tries)),
                                      ("2", "2. 200 logins at once", lambda: phase_storm(tree)),
                                      ("7", "7. edge sessions", lambda: phase_sessions(tree)),
                                      ("8", "8. query strings", lambda: phase_query(tree)),
                                      ("9", "9. 2,000 idle connections", lambda: phase_idle(tree))):
                    if key in phases:
                        results.setdefault(name, []).append(fn())
            finally:
                tree.stop_all()
    print(f"tree: {args.tree.resolve()}  tries per account: {args.tries}")
    for name, runs in results.items():
        summary(name, runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
