"""`scripts/setup.sh edge --code CODE --dashboard URL`, run as a site administrator runs it on a desk's Pi: a real
dashboard process on loopback with a real SQLite file issues the code (`facemon-dashboard add-stations --codes`),
the script redeems it and installs the desk's env file, and the code is then spent.

Only the venv step is not the one a Pi runs: `FACEMON_SETUP_VENV` points the script at this test's own venv (which
already holds the edge's packages) instead of creating one and pip-installing into it. The redemption, the edge's
settings check and the install are the script's own."""
from __future__ import annotations

import grp
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import requests

from shared.envfile import parse_env_file
from tests.procs import REPO, ManagedProcess, free_port

BIN = Path(sys.executable).parent
RECOGNIZER_TOKEN = "room-recognizer-token-0123456789"


def _ok(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


def _facemon_group() -> bool:
    try:
        grp.getgrnam("facemon")
        return True
    except KeyError:
        return False


def test_setup_sh_edge_redeems_a_code_from_a_real_dashboard_once(tmp_path: Path) -> None:
    db_env = {"FACEMON_DASHBOARD_DATABASE_URL": f"sqlite:///{tmp_path / 'dashboard.sqlite3'}"}
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    dashboard = ManagedProcess("dashboard", [str(BIN / "facemon-dashboard"), "serve", "--host", "127.0.0.1", "--port",
                                             str(port)], tmp_path / "dashboard.log", db_env)

    def cli(*args: str) -> str:
        done = subprocess.run([str(BIN / "facemon-dashboard"), "--log-level", "WARNING", *args], cwd=REPO,
                              env={**os.environ, **db_env}, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout

    etc = tmp_path / "etc"  # where the script installs edge.env (/etc/facemon on a Pi as root, ./edge.env otherwise)

    def setup(code: str) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", str(REPO / "scripts" / "setup.sh"), "edge", "--code", code, "--dashboard", url],
                              cwd=tmp_path, capture_output=True, text=True, timeout=60,
                              env={**os.environ, "FACEMON_SETUP_VENV": sys.prefix, "FACEMON_SETUP_ETC": str(etc)})

    try:
        dashboard.start(lambda: _ok(f"{url}/healthz"), timeout=60)
        printed = cli("add-stations", "desk-07", "--codes", "--recognizer", "10.0.0.5:8002", "--recognizer-token",
                      RECOGNIZER_TOKEN, "--dashboard-url", url)
        code = re.search(r"^  desk-07  ([A-Z0-9]{4}-[A-Z0-9]{4}-[A-Z0-9]{4})$", printed, re.M).group(1)

        first = setup(code)
        assert first.returncode == 0, first.stdout + first.stderr
        assert "nothing created or installed" in first.stdout and "installed " + str(etc / "edge.env") in first.stdout
        installed = etc / "edge.env"
        mode = stat.S_IMODE(installed.stat().st_mode)
        # as root with a facemon group the unit's group may read it (0640); otherwise only its owner (0600)
        assert mode == (0o640 if os.getuid() == 0 and _facemon_group() else 0o600), oct(mode)
        env = parse_env_file(installed.read_text())
        assert env["FACEMON_EDGE_STATION"] == "desk-07" and env["FACEMON_EDGE_DASHBOARD_URL"] == url
        assert (env["FACEMON_EDGE_RECOGNIZER"], env["FACEMON_EDGE_TOKEN"]) == ("10.0.0.5:8002", RECOGNIZER_TOKEN)
        token = env["FACEMON_EDGE_DASHBOARD_TOKEN"]
        assert len(token) >= 24 and token not in printed  # made at redemption, never printed by add-stations

        # the token is desk-07's credential at this dashboard: a desk sign-in with it is answered for desk-07
        cli("create-user", "--username", "eva", "--password", "eva-desk-password-1", "--role", "staff")
        signin = {"username": "eva", "password": "eva-desk-password-1"}
        answer = requests.post(f"{url}/api/auth/check", json=signin, headers={"Authorization": f"Bearer {token}"},
                               timeout=30)
        assert answer.status_code == 200 and answer.json()["ok"] is True, answer.text
        assert requests.post(f"{url}/api/auth/check", json=signin, headers={"Authorization": "Bearer " + "x" * 43},
                             timeout=30).status_code == 401

        # the code is spent: a second run is refused with the dashboard's sentence and leaves the file as it was
        before = installed.read_bytes()
        second = setup(code)
        assert second.returncode == 2 and "already used" in second.stderr, second.stdout + second.stderr
        assert installed.read_bytes() == before
    finally:
        dashboard.stop()
