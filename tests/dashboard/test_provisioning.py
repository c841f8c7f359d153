"""Provisioning a room in one step: `facemon-dashboard add-stations desk-01..desk-40 --out DIR` makes a token and a
ready 0600 env file per desk, which the edge's own settings rules accept and which admits that desk."""
from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from dashboard.__main__ import main
from dashboard.app import create_app
from dashboard.config import DashboardConfig
from dashboard.provisioning import ProvisionError, expand_stations
from dashboard.services import services
from edge.env_check import check
from shared.envfile import EnvFileError, parse_env_file, render_env_file

REPO = Path(__file__).resolve().parents[2]
RECOGNIZER_TOKEN = "room-recognizer-token-0123456789"


def test_station_ranges():
    assert expand_stations(["desk-01..desk-03", "desk-07", "desk-02"]) == ["desk-01", "desk-02", "desk-03", "desk-07"]
    assert expand_stations(["desk-8..10"]) == ["desk-8", "desk-9", "desk-10"]
    assert expand_stations(["r2-desk-098..r2-desk-101"])[-1] == "r2-desk-101"
    for bad, why in ((["desk-05..desk-01"], "backwards"), (["../etc"], "must not"), (["desk-1..desk-5000"], "more than"),
                     ([], "no station")):
        with pytest.raises(ProvisionError, match=why):
            expand_stations(bad)


def test_env_file_rules():
    text = render_env_file({"FACEMON_EDGE_STATION": "desk-01", "FACEMON_EDGE_DASHBOARD_URL": "https://d.lab:8443/x"}, "a\nb")
    assert text.startswith("# a\n# b\n") and parse_env_file(text)["FACEMON_EDGE_DASHBOARD_URL"] == "https://d.lab:8443/x"
    assert parse_env_file('A="x y"\n; c\n\nB=\'z\'') == {"A": "x y", "B": "z"}
    with pytest.raises(EnvFileError, match="quoted"):
        render_env_file({"A": "has space"})
    with pytest.raises(EnvFileError, match="line 2"):
        parse_env_file("A=1\nnot a line\n")


def _provision(db: str, out: Path, *extra: str) -> int:
    return main(["--db", db, "--log-level", "WARNING", "add-stations", *extra, "--out", str(out), "--recognizer",
                 "10.0.0.5:8002", "--recognizer-token", RECOGNIZER_TOKEN, "--dashboard-url", "https://dash.lab"])


def test_add_stations_writes_ready_private_files_and_tokens_that_work(tmp_path, capsys):
    db = f"sqlite:///{tmp_path / 'd.sqlite3'}"
    out = tmp_path / "edges"
    assert _provision(db, out, "desk-01..desk-40") == 0
    files = sorted(out.glob("*.env"))
    assert len(files) == 40 and stat.S_IMODE(out.stat().st_mode) == 0o700
    assert {stat.S_IMODE(f.stat().st_mode) for f in files} == {0o600}
    env = parse_env_file((out / "desk-07.env").read_text())
    assert env["FACEMON_EDGE_STATION"] == "desk-07" and env["FACEMON_EDGE_TOKEN"] == RECOGNIZER_TOKEN
    assert "FACEMON_EDGE_LOGIN" not in env  # sign-in is on with a dashboard: a fixed login would be refused
    assert check(out / "desk-07.env").startswith("desk-07: recognizer 10.0.0.5:8002, camera picamera, sign-in on")
    tokens = {parse_env_file(f.read_text())["FACEMON_EDGE_DASHBOARD_TOKEN"] for f in files}
    assert len(tokens) == 40  # one per desk
    app = create_app(DashboardConfig(database_url=db, secret_key="test-secret-key-0123456789"))
    client = app.test_client()
    hdr = {"Authorization": f"Bearer {env['FACEMON_EDGE_DASHBOARD_TOKEN']}"}
    assert client.post("/api/stations/desk-07/status", json={"recognizer_connected": True}, headers=hdr).status_code == 200
    assert client.post("/api/stations/desk-08/status", json={"recognizer_connected": True}, headers=hdr).status_code == 403
    # again: refused, nothing changed; --replace revokes the old token and writes a new one
    capsys.readouterr()
    assert _provision(db, out, "desk-07") == 2 and "already holding a token: desk-07" in capsys.readouterr().err
    assert parse_env_file((out / "desk-07.env").read_text()) == env
    (out / "desk-07.env").chmod(0o644)
    assert _provision(db, out, "desk-07", "--replace") == 0
    assert stat.S_IMODE((out / "desk-07.env").stat().st_mode) == 0o600
    assert client.post("/api/stations/desk-07/status", json={}, headers=hdr).status_code == 401  # the old one is dead
    services(app).broker.close()


def test_env_check_refuses_what_the_edge_would(tmp_path):
    """The contradictions of the old docs: a dashboard without the desk's token, a fixed login with sign-in on."""
    bad = tmp_path / "edge.env"
    bad.write_text("FACEMON_EDGE_STATION=desk-07\nFACEMON_EDGE_DASHBOARD_URL=http://d:5000\n")
    run = lambda: subprocess.run([sys.executable, "-m", "edge.env_check", str(bad)], cwd=REPO,  # noqa: E731
                                 capture_output=True, text=True, timeout=60)
    r = run()
    assert r.returncode == 2 and "FACEMON_EDGE_DASHBOARD_TOKEN is missing" in r.stderr
    bad.write_text(bad.read_text() + "FACEMON_EDGE_DASHBOARD_TOKEN=t\nFACEMON_EDGE_LOGIN=alice\n")
    r = run()
    assert r.returncode == 2 and "--login cannot be combined with sign-in" in r.stderr
    bad.write_text("FACEMON_EDGE_STATION=desk-07\nFACEMON_RECOGNIZER_TOKEN=x\n")
    assert "not edge settings" in run().stderr
    bad.write_text("FACEMON_EDGE_STATION=desk-07\n")
    os.chmod(bad, 0o644)
    r = run()
    assert r.returncode == 0 and "readable by others" in r.stderr
