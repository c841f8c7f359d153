"""The command line, run for real: accounts, tokens, purge, migrations, and `serve` on a fresh folder."""
from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from dashboard.db import head_revision
from dashboard.__main__ import main
from dashboard.config import ConfigError, DashboardConfig
from tests.dashboard.conftest import REPO, make_jpeg, meta

TOKEN = "demo-service-token-0123456789abcdef"


def test_config_from_env_and_bad_values():
    cfg = DashboardConfig.from_env({"FACEMON_DASHBOARD_PORT": "5055", "FACEMON_DASHBOARD_AUTO_UPGRADE": "no"}, host="0.0.0.0")
    assert (cfg.port, cfg.auto_upgrade, cfg.host) == (5055, False, "0.0.0.0")
    with pytest.raises(ConfigError, match="FACEMON_DASHBOARD_PORT"):
        DashboardConfig.from_env({"FACEMON_DASHBOARD_PORT": "five"})
    with pytest.raises(ConfigError, match="port"):
        DashboardConfig(port=70000)
    with pytest.raises(ConfigError, match="SQLAlchemy URL"):
        DashboardConfig(database_url="dashboard.db")


def test_admin_commands(tmp_path: Path, capsys):
    db = f"sqlite:///{tmp_path / 'cli.sqlite3'}"
    assert main(["--db", db, "--log-level", "WARNING", "create-admin", "--username", "root", "--password", "long-enough-pw"]) == 0
    assert main(["--db", db, "create-admin", "--username", "root", "--password", "short"]) == 2
    assert main(["--db", db, "add-station", "--station-id", "recognizer-1", "--kind", "service", "--token", TOKEN]) == 0
    assert main(["--db", db, "add-station", "--station-id", "desk-01"]) == 0
    out = capsys.readouterr()
    random_token = out.out.strip().splitlines()[-1]
    assert TOKEN in out.out and len(random_token) >= 40 and "at least 8" in out.err
    assert main(["--db", db, "add-station", "--station-id", "x", "--token", "short"]) == 2
    assert main(["--db", db, "db", "current"]) == 0
    assert f"schema revision: {head_revision()}" in capsys.readouterr().out
    # a scripted enrol grant: only for an admin, printed once, kept as a hash, listed in the enrolment audit
    assert main(["--db", db, "enrol-grant", "--admin", "nobody", "--station-id", "desk-01", "--identity", "kit"]) == 2
    assert main(["--db", db, "enrol-grant", "--admin", "root", "--station-id", "desk-01", "--identity", "../x"]) == 2
    assert main(["--db", db, "enrol-grant", "--admin", "root", "--station-id", "desk-01", "--identity", "kit"]) == 0
    grant = capsys.readouterr().out.strip().splitlines()[-1]
    assert len(grant) >= 40
    assert main(["--db", db, "enrolments"]) == 0
    listed = capsys.readouterr().out
    assert "by=root" in listed and "station=desk-01" in listed and "identity=kit" in listed and "used=-" in listed
    raw = (tmp_path / "cli.sqlite3").read_bytes()
    assert TOKEN.encode() not in raw and random_token.encode() not in raw and b"long-enough-pw" not in raw
    assert grant.encode() not in raw


def _wait_for_port(proc: subprocess.Popen, lines: list[str]) -> int:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line)
        found = re.search(r"listening on http://127\.0\.0\.1:(\d+)/", line)
        if found:
            return int(found.group(1))
    raise AssertionError("serve did not start:\n" + "".join(lines))


def test_serve_on_a_fresh_folder_then_purge(tmp_path: Path):
    """Zero set-up: `serve` in an empty folder creates var/dashboard.sqlite3 and its schema by itself."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = [sys.executable, "-m", "dashboard"]
    subprocess.run([*run, "add-station", "--station-id", "recognizer-1", "--kind", "service", "--token", TOKEN],
                   cwd=tmp_path, env=env, check=True, capture_output=True)
    proc = subprocess.Popen([*run, "serve", "--port", "0"], cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    try:
        url = f"http://127.0.0.1:{_wait_for_port(proc, lines)}"
        assert requests.get(f"{url}/healthz", timeout=5).json() == {"status": "ok"}
        old = meta(started_at=(dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=40)).isoformat())
        resp = requests.post(f"{url}/api/alerts", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5,
                             files={"meta": (None, json.dumps(old)), "image": ("e.jpg", make_jpeg(), "image/jpeg")})
        assert resp.status_code == 201, resp.text
    finally:
        proc.terminate()
        assert proc.wait(10) == 0, "serve stops cleanly on SIGTERM"
        proc.stderr.close()
    assert (tmp_path / "var" / "dashboard.sqlite3").is_file()
    purge = subprocess.run([*run, "purge", "--older-than-days", "30"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert purge.returncode == 0 and "deleted 2 evidence image(s)" in purge.stdout
