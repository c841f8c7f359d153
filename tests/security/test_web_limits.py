"""Sign-in limits that hold when the tries arrive at once, over real sockets on 127.0.0.1 (issue 15, item 1-2).

Each limiter is measured twice in the same test: N wrong passwords one by one (the baseline), then N at once for
another account. "Checked" is counted on the server: hashes verified by the dashboard's password pool
(`PasswordChecks.checked`), which must equal the 401 answers the client saw.
"""
from __future__ import annotations

import logging
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Callable

import pytest
import requests

from dashboard import accounts, station_tokens
from dashboard.services import services
from edge.auth import AuthSettings, DashboardClient, SignIn
from edge.frames import LatestFrame
from edge.web import EdgeState, create_app
from shared.web_server import WebServer, WebServerSettings
from tests.dashboard.conftest import PASSWORD, LiveServer, build_app
from tests.procs import ManagedProcess, free_port

pytestmark = pytest.mark.timeout(180)
N = 30


def at_once(n: int, send: Callable[[int], int]) -> Counter:
    """Call send(i) from n threads released together; the status codes counted."""
    gate = threading.Barrier(n)
    codes: list = []

    def one(i: int) -> None:
        gate.wait()
        codes.append(send(i))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return Counter(codes)


@pytest.fixture
def dashboard(tmp_path):
    app = build_app(f"sqlite:///{tmp_path / 'dashboard.sqlite3'}")
    with services(app).writer() as db:  # takes the write lock first (the station watcher writes too)
        for name in ("serial", "parallel"):
            accounts.create_user(db, name, PASSWORD, "staff")
        token = station_tokens.create_token(db, "desk-01", "station")
    server = LiveServer(app)
    yield server, token
    server.stop()
    services(app).close()


def login_form(base: str) -> tuple[str, str]:
    s = requests.Session()
    page = s.get(f"{base}/login", timeout=10).text
    return s.cookies["session"], page.split('name="csrf_token" value="')[1].split('"')[0]


def test_dashboard_login_tries_at_once_are_checked_no_more_than_one_by_one(dashboard, caplog):
    server, _ = dashboard
    caplog.set_level(logging.INFO, "dashboard.signin")
    checks = services(server.app).password_checks
    cookie, csrf = login_form(server.url)

    def post(user: str, i: int) -> int:
        return requests.post(f"{server.url}/login", data={"username": user, "password": f"wrong-{i}", "csrf_token": csrf},
                             cookies={"session": cookie}, timeout=60, allow_redirects=False).status_code

    before = checks.checked
    serial = Counter(post("serial", i) for i in range(N))
    serial_checked = checks.checked - before
    before = checks.checked
    parallel = at_once(N, lambda i: post("parallel", i))
    parallel_checked = checks.checked - before
    assert serial_checked == serial[401] == 5, serial  # the free tries, then 5 s to wait
    assert parallel_checked == parallel[401] <= serial_checked + 1, parallel  # it was 60 of 60
    assert set(parallel) <= {401, 429}
    # 60 refused or failed logins, 10 lines a minute at most; the rest counted for one summary line
    lines = [r for r in caplog.records if r.name == "dashboard.signin"]
    assert len(lines) == 10 and services(server.app).refusals.suppressed_total == 2 * N - 10


def test_desk_check_tries_at_once_are_checked_no_more_than_one_by_one(dashboard):
    server, token = dashboard
    checks = services(server.app).password_checks

    def post(user: str, i: int) -> int:
        return requests.post(f"{server.url}/api/auth/check", json={"username": user, "password": f"wrong-{i}"},
                             headers={"Authorization": f"Bearer {token}"}, timeout=60).status_code

    before = checks.checked
    serial = Counter(post("serial", i) for i in range(N))
    serial_checked = checks.checked - before
    before = checks.checked
    parallel = at_once(N, lambda i: post("parallel", i))
    parallel_checked = checks.checked - before
    assert serial_checked == serial[401] == 5, serial
    assert parallel_checked == parallel[401] <= serial_checked + 1, parallel  # it was 40 of 40
    assert set(parallel) <= {401, 429}


class DeskLink:
    def set_login(self, login: str) -> None:
        pass

    def status(self) -> dict:
        return {"online": False}


def test_edge_sign_in_tries_at_once_are_checked_no_more_than_one_by_one(dashboard):
    server, token = dashboard
    checks = services(server.app).password_checks
    signin = SignIn(AuthSettings(station="desk-01"), DashboardClient(server.url, token), DeskLink())
    state = EdgeState(display=LatestFrame(), link=DeskLink(), stop=threading.Event(), station="desk-01", auth=signin,
                      secret_key="k" * 40)
    edge = WebServer(create_app(state), WebServerSettings(threads=16, name="edge page")).start()
    base = f"http://127.0.0.1:{edge.port}"
    try:
        s = requests.Session()
        page = s.get(f"{base}/signin", timeout=10).text
        csrf = page.split('name="csrf-token" content="')[1].split('"')[0]
        cookie = s.cookies["facemon_edge"]

        def post(user: str, i: int) -> int:
            return requests.post(f"{base}/api/signin", json={"username": user, "password": f"wrong-{i}"},
                                 headers={"X-CSRF-Token": csrf}, cookies={"facemon_edge": cookie}, timeout=60).status_code

        before = checks.checked
        serial = Counter(post("serial", i) for i in range(N))
        serial_checked = checks.checked - before
        before = checks.checked
        parallel = at_once(N, lambda i: post("parallel", i))
        parallel_checked = checks.checked - before
    finally:
        edge.stop()
    assert serial[401] == serial_checked == 5, serial
    assert parallel[401] == parallel_checked <= serial_checked + 1, parallel  # it was 30 of 30
    assert set(parallel) <= {401, 429}


PROBE = """
import http.client, sys, time
port, seconds = int(sys.argv[1]), float(sys.argv[2])
c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
end, out = time.time() + seconds, []
while time.time() < end:
    t = time.perf_counter(); c.request("GET", "/healthz"); c.getresponse().read(); out.append(time.perf_counter() - t)
    time.sleep(0.02)
print(" ".join(f"{x:.5f}" for x in out))
"""


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@pytest.mark.slow
def test_200_logins_at_once_keep_memory_bounded_and_health_answering(tmp_path):
    """A real `python -m dashboard serve`; 200 logins of made-up names at once (each a hash, no account needed).
    Health is probed from another process (so the 200 client threads do not slow the probe itself)."""
    port = free_port()
    proc = ManagedProcess("dashboard", [sys.executable, "-m", "dashboard", "--db", f"sqlite:///{tmp_path / 'd.sqlite3'}",
                                        "serve", "--port", str(port)], tmp_path / "dashboard.log")
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return requests.get(f"{base}/healthz", timeout=1).ok
        except requests.RequestException:
            return False

    proc.start(up, timeout=60)
    try:
        cookie, csrf = login_form(base)
        requests.post(f"{base}/login", data={"username": "warm-up", "password": "x" * 10, "csrf_token": csrf},
                      cookies={"session": cookie}, timeout=30)  # the dummy hash is made once
        time.sleep(0.5)
        idle = rss_mb(proc.proc.pid)
        baseline = subprocess.run([sys.executable, "-c", PROBE, str(port), "1.5"], capture_output=True, text=True, check=True)
        base_lat = [float(x) for x in baseline.stdout.split()]
        peak = [idle]
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                peak.append(rss_mb(proc.proc.pid))
                time.sleep(0.01)

        sampler = threading.Thread(target=sample)
        sampler.start()
        probe = subprocess.Popen([sys.executable, "-c", PROBE, str(port), "4"], stdout=subprocess.PIPE, text=True)
        time.sleep(0.3)
        codes = at_once(200, lambda i: requests.post(
            f"{base}/login", data={"username": f"nobody-{i}", "password": "wrong-password", "csrf_token": csrf},
            cookies={"session": cookie}, timeout=60).status_code)
        storm_lat = [float(x) for x in probe.communicate(timeout=60)[0].split()]
        done.set()
        sampler.join()
    finally:
        proc.stop()
    assert set(codes) <= {401, 429} and sum(codes.values()) == 200, codes
    assert max(peak) - idle < 100, (idle, max(peak))  # it was 67-86 MB -> 1.33 GB
    # health keeps answering: its answers during the storm against the median before it, same test. Nine in ten
    # within 40x the calm median (+0.1 s); the slowest within 5x that (one probe delayed ~0.25 s by the scheduler
    # on a loaded 2-core CI box is not starvation; starvation, as before the limits, is seconds)
    bound = 40 * statistics.median(base_lat) + 0.1
    p90 = statistics.quantiles(storm_lat, n=10)[-1]
    assert p90 < bound and max(storm_lat) < 5 * bound, (statistics.median(base_lat), p90, max(storm_lat))
