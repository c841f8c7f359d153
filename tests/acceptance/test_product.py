"""The product's promises through the running processes, started as a user starts them.

A dashboard (`python -m dashboard serve`, SQLite file), a recognizer (`python -m recognizer`, alerts to the
dashboard through its outbox) and one edge per scenario (`python -m edge`, a clip as its camera). Each test
asserts what a user would look at: the names on the edge's /api/status, the MJPEG feed, and the incidents the
dashboard stored. The liveness timeouts are shortened by flags (the defaults are proven on clip time in
tests/test_replay.py); everything else is the recognizer's default.
"""
from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import pytest
import requests

from tests.clips import held_closure_clip, still_clip
from tests.conftest import FIXTURES, REPO, SAMPLE_CLIP
from tests.procs import ManagedProcess, free_port, read_mjpeg

pytestmark = [pytest.mark.timeout(600), pytest.mark.slow]
STATION_TOKEN = "acceptance-station-token"
SERVICE_TOKEN = "acceptance-recognizer-service-token-01"
ADMIN_PASSWORD = "acceptance-admin-pw"
# liveness waits shortened for the test's sake (defaults: 30 s first blink, 5 s no_blink, 10 s eyes_closed)
RECOGNIZER_FLAGS = ["--first-blink-timeout", "8", "--no-blink-after", "2", "--eyes-closed-after", "2",
                    "--unknown-after", "2", "--cooldown", "300", "--workers", "1"]


class Product:
    def __init__(self, tmp: Path, index: Path) -> None:
        self.tmp = tmp
        self.db = tmp / "dashboard.sqlite3"
        self.dash_port, self.rec_port = free_port(), free_port()
        self.dash_url = f"http://127.0.0.1:{self.dash_port}"
        py = sys.executable
        self.db_url = db_url = f"sqlite:///{self.db}"
        for cmd in (["create-admin", "--username", "admin", "--password", ADMIN_PASSWORD],
                    ["add-station", "--station-id", "recognizer", "--kind", "service", "--token", SERVICE_TOKEN]):
            subprocess.run([py, "-m", "dashboard", "--db", db_url, *cmd], cwd=REPO, check=True, capture_output=True,
                           timeout=120)
        self.dashboard = ManagedProcess(
            "dashboard", [py, "-m", "dashboard", "--db", db_url, "serve", "--host", "127.0.0.1", "--port",
                          str(self.dash_port)], tmp / "dashboard.log")
        self.recognizer = ManagedProcess(
            "recognizer", [py, "-m", "recognizer", "--host", "127.0.0.1", "--port", str(self.rec_port),
                           "--token", STATION_TOKEN, "--index", str(index), "--known-faces", str(tmp / "known_faces"),
                           "--dashboard-url", self.dash_url, "--dashboard-token", SERVICE_TOKEN,
                           "--outbox", str(tmp / "outbox.sqlite3"), *RECOGNIZER_FLAGS], tmp / "recognizer.log")
        self.edges: list[ManagedProcess] = []

    def start(self) -> None:
        self.dashboard.start(ready=lambda: _http_ok(f"{self.dash_url}/login"))
        self.recognizer.start(ready=lambda: "listening on" in self.recognizer.output())

    def edge(self, station: str, source: Path, login: str) -> "Edge":
        """An edge as staff set one up: its station credential issued by the dashboard, then started."""
        credential = f"{station}-credential-0123456789abcdef"
        made = subprocess.run([sys.executable, "-m", "dashboard", "--db", self.db_url, "add-station", "--station-id",
                               station, "--token", credential], cwd=REPO, capture_output=True, text=True, timeout=120)
        assert made.returncode == 0, made.stderr[-3000:]  # the CLI's own words if it fails (the product is running)
        port = free_port()
        proc = ManagedProcess(
            f"edge-{station}", [sys.executable, "-m", "edge", "--source", str(source), "--recognizer",
                                f"127.0.0.1:{self.rec_port}", "--station", station, "--login", login,
                                "--token", STATION_TOKEN, "--dashboard-token", credential,
                                "--web-host", "127.0.0.1", "--web-port", str(port)],
            self.tmp / f"edge-{station}.log")
        proc.start(ready=lambda: _http_ok(f"http://127.0.0.1:{port}/api/status"))
        self.edges.append(proc)
        return Edge(station, f"http://127.0.0.1:{port}", proc)

    def incidents(self, station: str, kind: Optional[str] = None) -> list[dict]:
        """The incidents the dashboard stored for `station` (read from its SQLite file)."""
        with sqlite3.connect(self.db) as conn:
            rows = conn.execute("SELECT alert_id, type, login_name, started_at, ended_at, details FROM alerts "
                                "WHERE station_id = ?", (station,)).fetchall()
            evidence = {r[0] for r in conn.execute("SELECT alert_id FROM evidence")}
        out = [{"alert_id": a, "type": t, "login": lg, "started_at": s, "ended_at": e, "details": json.loads(d),
                "evidence": a in evidence} for a, t, lg, s, e, d in rows]
        return [x for x in out if kind is None or x["type"] == kind]

    def stop(self) -> None:
        for proc in [*self.edges, self.recognizer, self.dashboard]:
            proc.stop()


class Edge:
    def __init__(self, station: str, url: str, proc: ManagedProcess) -> None:
        self.station, self.url, self.proc = station, url, proc

    def status(self) -> dict:
        return requests.get(f"{self.url}/api/status", timeout=5).json()

    def watch(self, until: Callable[[dict], bool], timeout: float, what: str) -> list[dict]:
        """Poll /api/status every 0.2 s until `until(status)`; returns every status seen (the faces over time)."""
        seen: list[dict] = []
        deadline = time.time() + timeout
        while time.time() < deadline:
            seen.append(self.status())
            if until(seen[-1]):
                return seen
            time.sleep(0.2)
        raise AssertionError(f"{self.station}: timed out waiting for {what}; last status {seen[-1] if seen else None}\n"
                             f"{self.proc.output()[-3000:]}")

    def stop(self) -> None:
        self.proc.stop()


def _http_ok(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code < 500
    except requests.RequestException:
        return False


def wait_incidents(product: Product, station: str, kind: str, timeout: float, at_least: int = 1) -> list[dict]:
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = product.incidents(station, kind)
        if len(found) >= at_least:
            return found
        time.sleep(0.5)
    raise AssertionError(f"no {kind} incident for {station} on the dashboard after {timeout} s: "
                         f"{product.incidents(station)}\n{product.recognizer.output()[-3000:]}")


@pytest.fixture(scope="module")
def product(tmp_path_factory, sample_index_dir):
    tmp = tmp_path_factory.mktemp("product")
    shutil.copytree(sample_index_dir, tmp / "encodings")
    p = Product(tmp, tmp / "encodings")
    try:
        p.start()
        yield p
    finally:
        p.stop()


def test_enrolled_person_is_named_and_the_feed_is_served(product) -> None:
    edge = product.edge("desk-lin", SAMPLE_CLIP, "lin_manuel_miranda")
    try:
        seen = edge.watch(lambda s: any(f.get("name") == "lin_manuel_miranda" for f in s.get("faces", [])), 90,
                          "lin_manuel_miranda named")
        assert seen[-1]["online"]
        frames = read_mjpeg(f"{edge.url}/video_feed", 3)
        assert len(frames) == 3 and frames[0].shape[1] == 640  # the annotated feed, read by a client
        # through a whole loop of the clip, Lin (enrolled, and the desk's evaluator) is never a stranger
        loop_end = time.time() + 12  # longer than one loop of the 9 s clip
        more = edge.watch(lambda s: time.time() >= loop_end, 40, "a whole loop of the clip")
        lin_tracks = {f["track"] for s in seen + more for f in s.get("faces", []) if f.get("name") == "lin_manuel_miranda"}
        assert lin_tracks
        assert not any(f["track"] in lin_tracks and f["state"] == "unknown" for s in seen + more for f in s["faces"])
    finally:
        edge.stop()
    time.sleep(3)  # let the outbox deliver
    assert not product.incidents("desk-lin", "wrong_person")
    for inc in product.incidents("desk-lin", "unknown_face"):  # only a real stranger (nobody within the radius)
        assert inc["details"]["distance"] > 0.6, inc


def test_stranger_raises_one_unknown_face_incident(product, tmp_path) -> None:
    clip = still_clip(FIXTURES / "stranger_kit.jpg", tmp_path / "stranger.mp4", seconds=6, fps=10)
    edge = product.edge("desk-stranger", clip, "alice")
    try:
        edge.watch(lambda s: any(f.get("state") == "unknown" for f in s.get("faces", [])), 60, "an unknown face")
        (inc,) = wait_incidents(product, "desk-stranger", "unknown_face", 30)
        time.sleep(8)  # the stranger stays: still one incident, not one per frame
        assert len(product.incidents("desk-stranger", "unknown_face")) == 1
        assert inc["login"] == "alice" and inc["evidence"] and inc["details"]["distance"] > 0.6
    finally:
        edge.stop()


def test_still_photo_raises_no_blink(product, tmp_path) -> None:
    clip = still_clip(FIXTURES / "obama_probe.jpg", tmp_path / "photo.mp4", seconds=6, fps=10)
    edge = product.edge("desk-photo", clip, "barack_obama")
    started = time.time()
    try:
        seen = edge.watch(lambda s: any(f.get("liveness") == "no_blink" for f in s.get("faces", [])), 60,
                          "liveness no_blink on the feed")
        assert all(f.get("blinks", 0) == 0 for s in seen for f in s.get("faces", []))
        (inc,) = wait_incidents(product, "desk-photo", "no_blink", 30)
        assert inc["evidence"] and inc["login"] == "barack_obama"
        assert time.time() - started < 8 + 2 + 30  # first-blink timeout + alert wait + start-up and delivery
        assert not product.incidents("desk-photo", "unknown_face")  # the right person's photo: a spoof, not a stranger
    finally:
        edge.stop()


@pytest.mark.data
def test_blinking_face_becomes_live(product, data_dir) -> None:
    edge = product.edge("desk-blink", data_dir / "blink" / "dinoman_test.mp4", "alice")
    try:
        seen = edge.watch(lambda s: any(f.get("liveness") == "live" for f in s.get("faces", [])), 60, "a live face")
        assert any(f.get("blinks", 0) >= 1 for f in seen[-1]["faces"])
    finally:
        edge.stop()
    assert not product.incidents("desk-blink", "no_blink")


@pytest.mark.data
def test_long_eye_closure_raises_eyes_closed_not_a_blink(product, data_dir, tmp_path) -> None:
    clip = held_closure_clip(data_dir / "blink" / "dinoman_test.mp4", 37, 8.0, tmp_path / "closed.mp4")
    edge = product.edge("desk-asleep", clip, "alice")
    try:
        seen = edge.watch(lambda s: any(f.get("liveness") == "eyes_closed" for f in s.get("faces", [])), 60,
                          "eyes_closed on the feed")
        assert all(f.get("blinks", 0) == 0 for s in seen for f in s.get("faces", []))  # the closure is no blink
        (inc,) = wait_incidents(product, "desk-asleep", "eyes_closed", 30)
        assert inc["evidence"]
    finally:
        edge.stop()
