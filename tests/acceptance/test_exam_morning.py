"""Exam morning, over real processes (10 desks; FACEMON_EXAM_DESKS=N for another room): a room provisioned with one
command, every desk started from its own env file, then four things go wrong and the dashboard shows each as the right alert within 20 s, with screenshots.

- one desk unplugged (its edge killed)            -> station_offline (raised by the dashboard, 15 s default)
- one camera covered (the picture goes flat)      -> camera_tamper, reason covered
- one stranger sits down                          -> unknown_face
- one evaluator swaps seats (Biden gets up, Obama sits at Biden's desk) -> wrong_person: expected joe_biden,
  seen barack_obama, with the distance band

What is shortened for the test (and why): desks run with sign-in off and a fixed login (a still photo cannot pass
the live blink check; sign-in is tested in tests/signin), the recognizer without liveness (a photo never blinks)
and reporting status every second; cameras are clips of real photos. Everything else is the defaults: the
provisioned files, station tokens checked by the recognizer, `offline_after_s` 15.
"""
from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import cv2
import numpy as np
import pytest
import requests

from shared.envfile import parse_env_file
from tests.clips import write_clip
from tests.conftest import FIXTURES, REPO
from tests.procs import ManagedProcess, free_port

pytestmark = [pytest.mark.timeout(600), pytest.mark.slow, pytest.mark.browser]
BIN = Path(sys.executable).parent
DESKS = int(os.environ.get("FACEMON_EXAM_DESKS", "10"))
EVENT_AT_S = 18.0  # seconds into each desk's clip when its incident happens (after the room has settled)
WITHIN_S = 20.0
PASSWORD = "exam-morning-admin"
RECOGNIZER_TOKEN = "exam-morning-recognizer-token-01"
OUT = Path(os.environ.get("FACEMON_TEST_OUTPUT", tempfile.gettempdir())) / "exam_morning"
W, H, FPS = 480, 360, 5
SEND_FPS = 2  # frames/s each desk sends: ten desks on a shared 2-core machine
SEND_WIDTH = 320  # the edges shrink frames to this width (FACEMON_EDGE_MAX_WIDTH): a face still fills ~150 px
MONITORED = ("online", "slow")  # slow: answered, at fewer frames/s than liveness wants (the shared CI machine)

PEOPLE = {  # short name -> a photo of that person the camera sees
    "obama": FIXTURES / "obama_probe.jpg",
    "biden": FIXTURES / "biden_probe.jpg",
    "lin": REPO / "known_faces" / "lin_manuel_miranda" / "ageitgey_lin-manuel-miranda.png",
    "alex": REPO / "known_faces" / "alex_lacamoire" / "ageitgey_alex_lacamoire1.jpg",
}
ENROLLED = {"barack_obama": "obama", "joe_biden": "biden", "lin_manuel_miranda": "lin", "alex_lacamoire": "alex"}


EMPTY = Path("empty chair")
SWAP_GAP_S = 3.0  # the swap: the evaluator gets up, the chair is empty a moment, another one sits down


def _canvas(photo: Optional[Path]) -> np.ndarray:
    """A 480x360 camera picture of `photo` (None: a hand over the lens, a flat dark picture)."""
    if photo is None:
        return np.full((H, W, 3), 24, np.uint8)
    if photo == EMPTY:  # the empty chair: a lit room with things in it, nobody
        yy, xx = np.mgrid[0:H, 0:W]
        room = (60 + 80 * xx / W + 30 * np.sin(yy / 17.0) * np.cos(xx / 23.0)).astype(np.uint8)
        return np.dstack([room, room + 10, room + 20])
    img = cv2.imread(str(photo))
    scale = min(W / img.shape[1], H / img.shape[0])
    img = cv2.resize(img, (int(img.shape[1] * scale), int(img.shape[0] * scale)), interpolation=cv2.INTER_AREA)
    out = np.full((H, W, 3), 90, np.uint8)
    y, x = (H - img.shape[0]) // 2, (W - img.shape[1]) // 2
    out[y:y + img.shape[0], x:x + img.shape[1]] = img
    return out


def scene(segments: list[tuple[Optional[Path], float]], out: Path) -> Path:
    """A clip of pictures held for some seconds each, moving a little as a person in front of a camera does."""
    rng = np.random.default_rng(abs(hash(out.name)) % 2**32)

    grain = [rng.normal(0, 1, (H, W, 3)).astype(np.float32) for _ in range(8)]  # sensor noise, drawn once

    def frames():  # noqa: ANN202
        for photo, seconds in segments:
            base = _canvas(photo).astype(np.float32)
            for i in range(int(seconds * FPS)):
                dx, dy = rng.integers(-3, 4, 2)
                moved = np.roll(base, (int(dy), int(dx)), axis=(0, 1)) if photo not in (None, EMPTY) else base
                noise = grain[i % len(grain)] * (1.0 if photo is None else 3.0)
                yield np.clip(moved + noise, 0, 255).astype(np.uint8)
    return write_clip(frames(), out, FPS)


def _stranger(tmp: Path) -> Path:
    """The stranger's photo cut around her face, so she sits as close to the camera as the evaluators do (the whole
    photo leaves her face under HOG's ~80 px once the edge shrinks frames to SEND_WIDTH)."""
    path = tmp / "stranger.jpg"
    if not path.exists():
        cv2.imwrite(str(path), cv2.imread(str(FIXTURES / "stranger_kit.jpg"))[40:320, 600:870])
    return path


class Room:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.dash_port, self.rec_port = free_port(), free_port()
        self.dash_url = f"http://127.0.0.1:{self.dash_port}"
        self.db = f"sqlite:///{tmp / 'dashboard.sqlite3'}"
        self.procs: dict[str, ManagedProcess] = {}

    def cli(self, *args: str) -> str:
        return subprocess.run([str(BIN / "facemon-dashboard"), "--db", self.db, "--log-level", "WARNING", *args],
                              capture_output=True, text=True, timeout=120, check=True).stdout

    def start(self, desks: list[str]) -> None:
        self.cli("create-admin", "--username", "admin", "--password", PASSWORD)
        service = self.cli("add-station", "--station-id", "recognizer", "--kind", "service").strip().splitlines()[-1]
        # the one command that provisions the room
        self.cli("add-stations", f"desk-01..desk-{len(desks):02d}", "--out", str(self.tmp / "edges"), "--recognizer",
                 f"127.0.0.1:{self.rec_port}", "--recognizer-token", RECOGNIZER_TOKEN, "--dashboard-url", self.dash_url)
        self._run("dashboard", [str(BIN / "facemon-dashboard"), "--db", self.db, "serve", "--port", str(self.dash_port)],
                  lambda: _ok(f"{self.dash_url}/healthz"), {"FACEMON_DASHBOARD_SLOW_FPS": "1"})  # desks send 2 fps here
        index = self.tmp / "encodings"
        subprocess.run([str(BIN / "facemon-enrol"), "--quiet", "--known-faces", str(REPO / "known_faces"), "--index",
                        str(index)], check=True, capture_output=True, timeout=300)
        self._run("recognizer", [str(BIN / "facemon-recognizer"), "--host", "127.0.0.1", "--port", str(self.rec_port),
                                 "--token", RECOGNIZER_TOKEN, "--index", str(index), "--known-faces",
                                 str(self.tmp / "known_faces"), "--outbox", str(self.tmp / "outbox.sqlite3"),
                                 "--dashboard-url", self.dash_url, "--dashboard-token", service, "--detector", "hog",
                                 "--workers", "1", "--no-liveness", "--status-interval", "1"],
                  lambda: "listening on" in self.procs["recognizer"].output(), {"OPENBLAS_NUM_THREADS": "1"}, 180)

    def start_edge(self, station: str, login: str, clip: Path) -> None:
        env = parse_env_file((self.tmp / "edges" / f"{station}.env").read_text())  # exactly what was provisioned
        env.update(FACEMON_EDGE_SOURCE=str(clip), FACEMON_EDGE_WEB_HOST="127.0.0.1", FACEMON_EDGE_WEB_PORT="0",
                   FACEMON_EDGE_AUTH="off", FACEMON_EDGE_LOGIN=login, FACEMON_EDGE_FPS_CAP=str(SEND_FPS),
                   FACEMON_EDGE_MAX_WIDTH=str(SEND_WIDTH),
                   FACEMON_EDGE_STATE_DIR=str(self.tmp / f"state-{station}"))
        self._run(station, [str(BIN / "facemon-edge")], lambda: "opened video file" in self.procs[station].output(), env)

    def _run(self, name: str, cmd: list[str], ready, env: Optional[dict] = None, timeout: float = 60) -> None:  # noqa: ANN001
        proc = ManagedProcess(name, cmd, self.tmp / f"{name}.log", env)
        self.procs[name] = proc
        proc.start(ready, timeout=timeout)

    def session(self) -> requests.Session:
        s = requests.Session()
        page = s.get(f"{self.dash_url}/login", timeout=10).text
        token = page.split('name="csrf_token" value="')[1].split('"')[0]
        assert s.post(f"{self.dash_url}/login", data={"username": "admin", "password": PASSWORD, "csrf_token": token},
                      timeout=10, allow_redirects=False).status_code == 302
        return s

    def stop(self) -> None:
        for proc in reversed(list(self.procs.values())):
            proc.stop()


def _ok(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


def test_exam_morning(tmp_path, chromium):
    t0 = time.time()
    mark = lambda what: print(f"[{time.time() - t0:5.1f} s] {what}", flush=True)  # noqa: E731
    desks = [f"desk-{i:02d}" for i in range(1, DESKS + 1)]
    logins = list(ENROLLED)  # an evaluator's login is their enrolled name (sign-in checks the face against it)
    plan = {desk: logins[i % len(logins)] for i, desk in enumerate(desks)}
    # the four desks where something happens, and what the camera shows there
    unplugged, covered, stranger, swapped = desks[2], desks[3], desks[4], desks[5]
    plan[swapped] = "joe_biden"
    clips: dict[str, Path] = {}
    for desk, login in plan.items():
        later = {covered: None, stranger: _stranger(tmp_path), swapped: PEOPLE["obama"]}
        segments = [(PEOPLE[ENROLLED[login]], EVENT_AT_S)]
        if desk == swapped:
            segments.append((EMPTY, SWAP_GAP_S))
        segments.append((later[desk], 45.0) if desk in later else (PEOPLE[ENROLLED[login]], 45.0))
        clips[desk] = scene(segments, tmp_path / f"{desk}.mp4")
    room = Room(tmp_path)
    mark("clips made")
    try:
        room.start(desks)
        mark("dashboard and recognizer up, room provisioned")
        files = sorted((tmp_path / "edges").glob("*.env"))
        assert len(files) == DESKS and all((f.stat().st_mode & 0o777) == 0o600 for f in files)
        starts: dict[str, float] = {}
        for desk in desks:
            room.start_edge(desk, plan[desk], clips[desk])
            starts[desk] = time.time()  # the clip (the camera) starts now: its event comes EVENT_AT_S later
        mark("edges started")
        s = room.session()
        wait_until = time.time() + 60
        while time.time() < wait_until:
            states = {d["station_id"]: d for d in s.get(f"{room.dash_url}/api/stations", timeout=10).json()["stations"]}
            if all(states.get(d, {}).get("state") in MONITORED for d in desks):
                break
            time.sleep(1)
        assert all(states[d]["state"] in MONITORED for d in desks), {d: states[d]["state_text"] for d in desks}
        mark("every desk monitored")

        unplug_at = starts[unplugged] + EVENT_AT_S
        time.sleep(max(0.0, unplug_at - time.time()))
        room.procs[unplugged].kill()  # the cable is pulled: no goodbye
        events = {unplugged: time.time(), covered: starts[covered] + EVENT_AT_S,
                  stranger: starts[stranger] + EVENT_AT_S, swapped: starts[swapped] + EVENT_AT_S + SWAP_GAP_S}
        want = {unplugged: "station_offline", covered: "camera_tamper", stranger: "unknown_face", swapped: "wrong_person"}
        seen: dict[str, dict] = {}
        deadline = max(events.values()) + WITHIN_S + 5
        while time.time() < deadline and len(seen) < len(want):
            for alert in s.get(f"{room.dash_url}/api/alerts?per_page=200", timeout=10).json()["alerts"]:
                desk = alert["station_id"]
                if want.get(desk) == alert["type"] and desk not in seen:
                    seen[desk] = {**alert, "noticed_after_s": time.time() - events[desk]}
            time.sleep(0.5)
        mark(f"alerts seen: {sorted(seen)}")
        logs = {k: p.output()[-1500:] for k, p in room.procs.items() if k in ("recognizer", "dashboard")}
        assert set(seen) == set(want), f"missing: {set(want) - set(seen)}\n{logs}"
        for desk, alert in seen.items():
            # the figure. The unplugged desk: the recognizer notices the dead connection at once, even while
            # busy with its frames (recognizer/server/hangup.py), so only the dashboard's 15 s are left
            assert alert["noticed_after_s"] <= WITHIN_S, (desk, alert["noticed_after_s"])
        offline = seen[unplugged]
        took = (dt.datetime.fromisoformat(offline["received_at"]) - dt.datetime.fromisoformat(offline["started_at"]))
        assert 15 <= took.total_seconds() <= 18, took  # the dashboard: gone 15 s (+ its 1 s watch) -> alert
        assert seen[covered]["details"].get("reason") in ("covered", "black")
        assert seen[swapped]["details"]["expected"] == "joe_biden" and seen[swapped]["details"]["names"] == ["barack_obama"]
        assert seen[swapped]["details"]["distance"] <= 0.6
        quiet = [a for a in s.get(f"{room.dash_url}/api/alerts?per_page=200", timeout=10).json()["alerts"]
                 if a["station_id"] not in want]
        assert not quiet, [(a["station_id"], a["type"], a["details"]) for a in quiet]  # the calm desks stay calm
        states = {d["station_id"]: d for d in s.get(f"{room.dash_url}/api/stations", timeout=10).json()["stations"]}
        assert states[unplugged]["state"] == "offline" and "left its recognizer" in states[unplugged]["state_text"]
        assert seen[unplugged]["login_name"] == plan[unplugged]  # who was at the desk that vanished
        _screenshots(chromium, room, seen)
        report = "\n".join(f"{desk}: {want[desk]} noticed {a['noticed_after_s']:.1f} s after the event"
                           f"{'' if a['noticed_after_s'] <= WITHIN_S else f' (over {WITHIN_S:g} s)'}"
                           for desk, a in sorted(seen.items()))
        OUT.mkdir(parents=True, exist_ok=True)
        (OUT / "timings.txt").write_text(f"{DESKS} desks\n{report}\n")
        print(f"\n{DESKS} desks; {report}\nscreenshots in {OUT}")
    finally:
        room.stop()


def _screenshots(driver, room: Room, seen: dict[str, dict]) -> None:  # noqa: ANN001
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    OUT.mkdir(parents=True, exist_ok=True)
    driver.set_window_size(1400, 2000)
    driver.get(f"{room.dash_url}/login")
    driver.find_element(By.ID, "username").send_keys("admin")
    driver.find_element(By.ID, "password").send_keys(PASSWORD)
    driver.find_element(By.ID, "login-button").click()
    wait = WebDriverWait(driver, 15)
    for alert in seen.values():
        wait.until(lambda d, a=alert: d.find_elements(By.ID, f"alert-{a['alert_id']}"))
    row = driver.find_element(By.ID, f"station-{next(d for d, a in seen.items() if a['type'] == 'station_offline')}")
    assert "offline" in row.text.lower()
    swapped = driver.find_element(By.ID, f"alert-{next(a['alert_id'] for a in seen.values() if a['type'] == 'wrong_person')}")
    assert "joe_biden" in swapped.text and "barack_obama" in swapped.text and "distance" in swapped.text
    driver.save_screenshot(str(OUT / "dashboard.png"))
    shutil.copy(OUT / "dashboard.png", OUT / f"dashboard-{int(time.time())}.png")
