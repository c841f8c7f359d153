"""Edge config from flags and environment, and `python -m edge` as a real process (start, SIGTERM)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from edge.config import ConfigError, EdgeConfig, load_config, parse_host_port
from tests.edge.conftest import REPO, wait_until
from tests.procs import free_port


def test_flags_win_over_environment_which_wins_over_defaults() -> None:
    env = {"FACEMON_EDGE_SOURCE": "2", "FACEMON_EDGE_TOKEN": "from-env", "FACEMON_EDGE_WEB_PORT": "9001",
           "FACEMON_EDGE_RECOGNIZER": "10.0.0.5:9002", "FACEMON_EDGE_LOG_LEVEL": "debug"}
    config = load_config(["--source", "clip.mp4", "--station", "desk-3", "--max-in-flight", "1"], env)
    assert config.source == "clip.mp4" and config.token == "from-env" and config.web_port == 9001
    assert (config.recognizer_host, config.recognizer_port) == ("10.0.0.5", 9002)
    assert config.station == "desk-3" and config.max_in_flight == 1 and config.log_level == "DEBUG"
    assert config.jpeg_quality == 80 and config.max_width == 640  # defaults
    assert "from-env" not in repr(config)  # the token stays out of logs
    settings = config.link_settings()
    assert settings.max_in_flight == 1 and settings.token == "from-env"


@pytest.mark.parametrize(
    ("argv", "env", "words"),
    [
        (["--jpeg-quality", "0"], {}, "--jpeg-quality: 0 is out of range 1..100"),
        ([], {"FACEMON_EDGE_WEB_PORT": "http"}, "FACEMON_EDGE_WEB_PORT: 'http' is not a valid int"),
        (["--station", "../x"], {}, "station id must not contain"),
        (["--recognizer", "host:port"], {}, "port 'port' is not a number"),
        (["--max-in-flight", "0"], {}, "--max-in-flight: 0 is out of range 1..16"),
        (["--log-level", "chatty"], {}, "--log-level: 'CHATTY' is not one of DEBUG, INFO"),
        (["--max-width", "10"], {}, "--max-width: 10 is out of range 0 or 64..10000"),
        ([], {"FACEMON_EDGE_SESSION_IDLE": "5"}, "FACEMON_EDGE_SESSION_IDLE: 5.0 is out of range 60..86400"),
        (["--auth", "maybe"], {}, "--auth: 'maybe' is not one of \\(empty\\), on, off"),
    ],
)
def test_bad_values_are_named(argv: list[str], env: dict, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        load_config(argv, env)


def test_host_port_forms() -> None:
    assert parse_host_port("lab-pc", 8002) == ("lab-pc", 8002)
    assert parse_host_port("[::1]:9000", 8002) == ("::1", 9000)
    with pytest.raises(ConfigError):
        EdgeConfig(source=" ")


def _run_edge(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "edge", *args], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


@pytest.mark.slow
def test_main_serves_until_sigterm_then_exits_cleanly(clip: Path) -> None:
    web = free_port()
    proc = _run_edge("--source", str(clip), "--recognizer", f"127.0.0.1:{free_port()}", "--station", "demo-desk",
                     "--login", "alice", "--token", "t", "--web-port", str(web))
    try:
        def up() -> bool:
            try:
                return requests.get(f"http://127.0.0.1:{web}/api/status", timeout=1).ok
            except requests.ConnectionError:
                return False

        assert wait_until(up, 15, step=0.2)
        assert requests.get(f"http://127.0.0.1:{web}/api/status", timeout=2).json()["station"] == "demo-desk"
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out
    assert "received SIGTERM" in out and "edge stopped" in out


def test_main_with_a_bad_source_exits_with_a_clear_message() -> None:
    proc = _run_edge("--source", "/no/such/clip.mp4", "--web-port", str(free_port()))
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 2 and "is not 'picamera'" in out


def test_main_with_an_unwritable_state_folder_names_the_folder_not_the_port(clip: Path, tmp_path: Path) -> None:
    """A read-only install (systemd ProtectSystem=strict without StateDirectory=) used to read as a port problem."""
    blocked = tmp_path / "file-not-folder"
    blocked.write_text("")
    proc = _run_edge("--source", str(clip), "--station", "desk-01", "--dashboard-url", "http://127.0.0.1:9",
                     "--dashboard-token", "t", "--web-port", str(free_port()), "--state-dir", str(blocked / "edge"))
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 2 and "cannot write the edge's state folder" in out and "FACEMON_EDGE_STATE_DIR" in out
    assert "cannot listen" not in out


def test_edge_imports_nothing_a_pi_lacks() -> None:
    """A Pi installs requirements-edge.txt only: the edge must not pull in dlib, TensorFlow or the recognizer."""
    code = ("import sys, edge.__main__, edge.runtime; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('dlib', 'tensorflow', 'face_recognition', 'face_recognition_models', 'recognizer')); "
            "print(bad); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
