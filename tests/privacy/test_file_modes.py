"""Everything the programs write is private: after a real run of facemon-enrol, the dashboard (CLI and server),
the recognizer (gallery, outbox) and the edge (state folder) — started from a shell whose umask is 022 — every file
they created is 0600 and every folder 0700. The systemd units set UMask=0077 as well."""
from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from shared.fsmode import loose_entries
from tests.clips import still_clip
from tests.procs import REPO, ManagedProcess, free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
FIXTURES = REPO / "tests" / "fixtures"
SERVICE_TOKEN = "modes-recognizer-service-token-0001"
STATION_TOKEN = "modes-station-token"


def _up(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code < 500
    except requests.RequestException:
        return False


def test_every_unit_sets_a_private_umask() -> None:
    units = sorted((REPO / "deploy").glob("*.service"))
    assert units
    for unit in units:
        lines = [ln.strip() for ln in unit.read_text().splitlines()]
        assert "UMask=0077" in lines, f"{unit.name} has no UMask=0077"


def test_files_written_by_a_real_run_are_0600_in_0700_folders(tmp_path: Path) -> None:
    old = os.umask(0o022)  # a permissive login shell: the programs must tighten it themselves
    procs: list[ManagedProcess] = []
    try:
        known = tmp_path / "src" / "known_faces"
        shutil.copytree(REPO / "known_faces" / "barack_obama", known / "barack_obama")
        clip = still_clip(FIXTURES / "stranger_kit.jpg", tmp_path / "src" / "stranger.mp4", 3, fps=8)
        data = {name: tmp_path / name for name in ("index", "dash", "rec", "edge")}
        py = sys.executable
        subprocess.run([py, "-m", "recognizer.identity.enrol", "--quiet", "--known-faces", str(known),
                        "--index", str(data["index"])], cwd=REPO, check=True, capture_output=True, timeout=180)
        db_url = f"sqlite:///{data['dash'] / 'dashboard.sqlite3'}"
        subprocess.run([py, "-m", "dashboard", "--db", db_url, "add-station", "--station-id", "recognizer",
                        "--kind", "service", "--token", SERVICE_TOKEN], cwd=REPO, check=True, capture_output=True,
                       timeout=120)
        credential = "desk-01-credential-0123456789abcdef"
        subprocess.run([py, "-m", "dashboard", "--db", db_url, "add-station", "--station-id", "desk-01",
                        "--token", credential], cwd=REPO, check=True, capture_output=True, timeout=120)
        dash_port, rec_port, web_port = free_port(), free_port(), free_port()
        dash_url = f"http://127.0.0.1:{dash_port}"
        dash = ManagedProcess("dashboard", [py, "-m", "dashboard", "--db", db_url, "serve", "--port", str(dash_port)],
                              tmp_path / "dashboard.log")
        procs.append(dash)
        dash.start(lambda: _up(f"{dash_url}/login"))
        rec = ManagedProcess("recognizer", [
            py, "-m", "recognizer", "--host", "127.0.0.1", "--port", str(rec_port), "--token", STATION_TOKEN,
            "--index", str(data["index"]), "--known-faces", str(known), "--dashboard-url", dash_url,
            "--dashboard-token", SERVICE_TOKEN, "--outbox", str(data["rec"] / "outbox.sqlite3"), "--workers", "1",
            "--no-liveness", "--unknown-after", "0.5", "--detector", "hog"], tmp_path / "recognizer.log")
        procs.append(rec)
        rec.start(lambda: "listening on" in rec.output())
        edge = ManagedProcess("edge", [
            py, "-m", "edge", "--source", str(clip), "--recognizer", f"127.0.0.1:{rec_port}", "--station", "desk-01",
            "--token", STATION_TOKEN, "--dashboard-token", credential, "--dashboard-url", dash_url,
            "--web-host", "127.0.0.1", "--web-port", str(web_port),
            "--state-dir", str(data["edge"] / "state")], tmp_path / "edge.log")
        procs.append(edge)
        edge.start(lambda: _up(f"http://127.0.0.1:{web_port}/api/status"))
        deadline = time.time() + 60
        db_file = data["dash"] / "dashboard.sqlite3"
        while time.time() < deadline:  # an alert with its evidence stored: every writer has written
            with sqlite3.connect(db_file) as conn:
                if conn.execute("SELECT count(*) FROM evidence").fetchone()[0]:
                    break
            time.sleep(0.5)
        else:
            raise AssertionError("no alert reached the dashboard:\n" + rec.output()[-3000:])
    finally:
        for p in reversed(procs):
            p.stop()
        os.umask(old)
    written = {name: sorted(p.relative_to(root).as_posix() for p in root.rglob("*")) for name, root in data.items()}
    assert "index.npz" in written["index"] and "outbox.sqlite3" in written["rec"], written
    assert any(n.startswith("state") for n in written["edge"]), written
    for name, root in data.items():
        assert loose_entries(root) == [], (name, [(str(p), oct(m)) for p, m in loose_entries(root)])
