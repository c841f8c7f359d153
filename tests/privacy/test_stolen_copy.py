"""The stolen copy, of the whole system: facemon-enrol, the dashboard, the recognizer and the edge run for real on
127.0.0.1 with real faces; a stranger raises an alert whose evidence reaches the dashboard and a Capture enrols
them. Then every file they wrote (the dashboard's database, the face index, the captured photos, the outbox, the
edge's state, the logs) is copied and searched: with the data key, no JPEG, PNG (raw or base64) and no float32
encoding of the index is in the copy; without one (the baseline, same run) they are found."""
from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from recognizer.identity.index import load_index
from shared.crypto import load_ring
from tests.clips import still_clip
from tests.procs import REPO, ManagedProcess, free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]
FIXTURES = REPO / "tests" / "fixtures"
SERVICE_TOKEN = "stolen-recognizer-service-token-0001"
STATION_TOKEN = "stolen-station-token"
CREDENTIAL = "desk-01-credential-0123456789abcdef"
MARKERS = {"jpeg": b"\xff\xd8\xff\xe0\x00\x10JFIF", "jfif": b"JFIF\x00", "png": b"\x89PNG\r\n\x1a\n",
           "base64 jpeg": b"/9j/4", "base64 png": b"iVBORw0KGgo"}


def _up(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code < 500
    except requests.RequestException:
        return False


def _found(blob: bytes, encodings) -> list[str]:  # noqa: ANN001 - (N,128) float32
    found = [name for name, marker in MARKERS.items() if marker in blob]
    for i, vec in enumerate(encodings):
        raw = vec.astype("<f4").tobytes()
        if any(raw[k:k + 16] in blob for k in range(0, len(raw) - 16, 4)):
            found.append(f"encoding {i}")
    return found


def _run_system(root: Path, key: Path | None) -> dict[str, Path]:
    """Run everything once; returns the folders it wrote, by what they are."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACEMON_")}
    if key is not None:
        env["FACEMON_RECOGNIZER_DATA_KEY_FILE"] = env["FACEMON_DASHBOARD_DATA_KEY_FILE"] = str(key)
    src = root / "src"
    shutil.copytree(REPO / "known_faces" / "barack_obama", src / "known_faces" / "barack_obama")
    clip = still_clip(FIXTURES / "stranger_kit.jpg", src / "stranger.mp4", 3, fps=8)
    data = {name: root / "data" / name for name in ("dashboard", "index", "known_faces", "outbox", "edge")}
    py = sys.executable
    subprocess.run([py, "-m", "recognizer.identity.enrol", "--quiet", "--known-faces", str(src / "known_faces"),
                    "--index", str(data["index"])], cwd=REPO, env=env, check=True, capture_output=True, timeout=180)
    db_url = f"sqlite:///{data['dashboard'] / 'dashboard.sqlite3'}"
    for args in (["--station-id", "recognizer", "--kind", "service", "--token", SERVICE_TOKEN],
                 ["--station-id", "desk-01", "--token", CREDENTIAL]):
        subprocess.run([py, "-m", "dashboard", "--db", db_url, "add-station", *args], cwd=REPO, env=env, check=True,
                       capture_output=True, timeout=120)
    dash_port, rec_port, web_port = free_port(), free_port(), free_port()
    dash_url = f"http://127.0.0.1:{dash_port}"
    procs: list[ManagedProcess] = []
    logs = root / "data" / "logs"
    logs.mkdir(parents=True)
    try:
        dash = ManagedProcess("dashboard", [py, "-m", "dashboard", "--db", db_url, "serve", "--port", str(dash_port)],
                              logs / "dashboard.log", env=env)
        procs.append(dash)
        dash.start(lambda: _up(f"{dash_url}/login"))
        rec = ManagedProcess("recognizer", [
            py, "-m", "recognizer", "--host", "127.0.0.1", "--port", str(rec_port), "--token", STATION_TOKEN,
            "--index", str(data["index"]), "--known-faces", str(data["known_faces"]), "--dashboard-url", dash_url,
            "--dashboard-token", SERVICE_TOKEN, "--outbox", str(data["outbox"] / "outbox.sqlite3"), "--workers", "1",
            "--no-liveness", "--unknown-after", "0.5", "--detector", "hog", "--enrol-policy", "open"],
            logs / "recognizer.log", env=env)
        procs.append(rec)
        rec.start(lambda: "listening on" in rec.output())
        edge = ManagedProcess("edge", [
            py, "-m", "edge", "--source", str(clip), "--recognizer", f"127.0.0.1:{rec_port}", "--station", "desk-01",
            "--token", STATION_TOKEN, "--dashboard-token", CREDENTIAL, "--web-host", "127.0.0.1",
            "--web-port", str(web_port), "--state-dir", str(data["edge"])], logs / "edge.log", env=env)
        procs.append(edge)
        edge.start(lambda: _up(f"http://127.0.0.1:{web_port}/api/status"))
        deadline = time.time() + 90
        while time.time() < deadline:  # an alert with its evidence stored on the dashboard
            with sqlite3.connect(data["dashboard"] / "dashboard.sqlite3") as conn:
                if conn.execute("SELECT count(*) FROM evidence").fetchone()[0]:
                    break
            time.sleep(0.5)
        else:
            raise AssertionError("no alert reached the dashboard:\n" + rec.output()[-3000:])
        answer = requests.post(f"http://127.0.0.1:{web_port}/api/capture", json={"name": "kit_harington"}, timeout=60)
        assert answer.status_code == 200 and answer.json()["ok"], answer.text
    finally:
        for p in reversed(procs):
            p.stop()
    assert list(data["known_faces"].rglob("capture-*.jpg")), "the Capture kept no photo"
    return {**data, "logs": logs}


@pytest.mark.parametrize("keyed", [False, True], ids=["no-key-baseline", "keyed"])
def test_a_stolen_copy_of_every_file_holds_no_image_or_encoding(tmp_path: Path, keyed: bool) -> None:
    key = None
    if keyed:
        key = tmp_path / "keys" / "data.key"
        made = subprocess.run([sys.executable, "-m", "recognizer", "data-key", "new", "--out", str(key)], cwd=REPO,
                              capture_output=True, text=True, timeout=60)
        assert made.returncode == 0, made.stderr
    written = _run_system(tmp_path, key)
    stolen = tmp_path / "stolen"
    shutil.copytree(tmp_path / "data", stolen)  # every file the system wrote, as it is on disk
    index = load_index(stolen / "index", ring=load_ring(str(key)) if key else None)  # what to look for
    assert len(index) == 3 and "kit_harington" in index.names, index.names
    found = {name: _found(b"".join(p.read_bytes() for p in sorted((stolen / name).rglob("*")) if p.is_file()),
                          index.encodings) for name in written}
    logging.getLogger(__name__).info("readable in the stolen copy (%s): %s", "keyed" if keyed else "no key", found)
    if keyed:
        assert all(v == [] for v in found.values()), found
    else:  # the baseline: the same run without a key leaves them readable
        assert "jpeg" in found["dashboard"] and "jpeg" in found["known_faces"], found
        assert {"encoding 0", "encoding 1", "encoding 2"} <= set(found["index"]), found
        assert "base64 jpeg" in found["outbox"], found  # the unknown face's crop for the review queue
