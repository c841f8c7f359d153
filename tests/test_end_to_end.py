"""End to end over real loopback sockets: edge (real clip as camera) → recognizer process → annotated feed.

The recognizer runs as a real `python -m recognizer` process so it can be killed and restarted
mid-stream; the edge runs in this process with its real Flask server on an ephemeral port.
"""
from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from edge.config import EdgeConfig
from edge.runtime import Edge
from tests.clips import still_clip
from tests.conftest import FIXTURES, REPO, SAMPLE_CLIP
from tests.procs import free_port, read_mjpeg

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]
TOKEN = "e2e-token"


class RecognizerProcess:
    def __init__(self, port: int, index: Path, known: Path, log: Path) -> None:
        self.cmd = [sys.executable, "-m", "recognizer", "--host", "127.0.0.1", "--port", str(port), "--token", TOKEN,
                    "--enrol-policy", "open", "--index", str(index), "--known-faces", str(known), "--workers", "1"]
        self.log = log
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(self.cmd, cwd=REPO, stdout=open(self.log, "a"), stderr=subprocess.STDOUT)
        deadline = time.time() + 60
        while "listening on" not in self.log.read_text():
            assert self.proc.poll() is None, self.log.read_text()
            assert time.time() < deadline, "recognizer did not start"
            time.sleep(0.2)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@pytest.fixture(scope="module")
def stack(tmp_path_factory, sample_index_dir):
    tmp = tmp_path_factory.mktemp("e2e")
    index = tmp / "encodings"
    index.mkdir()
    for f in sample_index_dir.iterdir():
        (index / f.name).write_bytes(f.read_bytes())
    port = free_port()
    rec = RecognizerProcess(port, index, tmp / "known_faces", tmp / "recognizer.log")
    rec.start()
    edges: list[Edge] = []

    def make_edge(source: Path, station: str) -> Edge:
        cfg = EdgeConfig(source=str(source), recognizer_port=port, station=station, login="alice",
                         token=TOKEN, web_port=0)
        edge = Edge(cfg)
        edge.start()
        edges.append(edge)
        return edge

    yield rec, make_edge, tmp
    for e in edges:
        e.stop()
    rec.stop()


def status(edge: Edge) -> dict:
    return requests.get(edge.url.replace("/video_feed_page", "/api/status"), timeout=5).json()


def wait_for(pred, timeout: float, what: str, edge: Edge):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = status(edge)
        if pred(last):
            return last
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; last status: {last}")


def test_clip_streams_and_names_known_and_unknown_faces(stack):
    rec, make_edge, _ = stack
    edge = make_edge(SAMPLE_CLIP, "desk-clip")
    wait_for(lambda s: s["online"] and s["results"] > 5, 60, "results", edge)
    frames = read_mjpeg(edge.url.replace("/video_feed_page", "/video_feed"), 3)
    assert len(frames) == 3 and frames[0].shape[1] == 640
    seen_known, seen_unknown = set(), 0
    deadline = time.time() + 90
    while time.time() < deadline and not (seen_known and seen_unknown):
        for face in status(edge)["faces"]:
            if face.get("state") == "known":
                seen_known.add(face["name"])
            elif face.get("state") == "unknown":
                seen_unknown += 1
        time.sleep(0.1)
    assert seen_known == {"lin_manuel_miranda"}
    assert seen_unknown > 0


def test_capture_button_enrols_and_refuses(stack):
    rec, make_edge, tmp = stack
    stranger = make_edge(still_clip(FIXTURES / "stranger_kit.jpg", tmp / "kit.mp4", 2, fps=15, width=640, noise=0), "desk-kit")
    group = make_edge(still_clip(FIXTURES / "two_people.jpg", tmp / "two.mp4", 2, fps=15, width=640, noise=0), "desk-two")
    capture = lambda e, name: requests.post(e.url.replace("/video_feed_page", "/api/capture"), json={"name": name}, timeout=30)  # noqa: E731
    wait_for(lambda s: s["online"] and s["results"] > 3, 60, "results", stranger)
    wait_for(lambda s: s["online"] and s["results"] > 3, 60, "results", group)
    wait_for(lambda s: s["faces"] and s["faces"][0]["state"] == "unknown", 30, "an unknown face", stranger)
    bad = capture(stranger, "../../etc")
    assert bad.status_code == 400 and not bad.json()["ok"]
    several = capture(group, "Somebody").json()
    assert not several["ok"] and "2 faces" in several["reason"]
    ok = capture(stranger, "Kit Harington").json()
    assert ok["ok"], ok
    assert (tmp / "known_faces" / "Kit Harington").is_dir()
    wait_for(lambda s: any(f.get("name") == "Kit Harington" for f in s["faces"]), 30, "the new name", stranger)


def test_recognizer_killed_and_restarted_edge_recovers(stack):
    rec, make_edge, _ = stack
    edge = make_edge(SAMPLE_CLIP, "desk-restart")
    wait_for(lambda s: s["online"] and s["results"] > 3, 60, "results", edge)
    rec.kill()
    offline = wait_for(lambda s: not s["online"], 20, "offline state", edge)
    assert offline["reason"]
    wait_for(lambda s: s["feed"] == "raw", 10, "raw feed", edge)
    frames = read_mjpeg(edge.url.replace("/video_feed_page", "/video_feed"), 2)
    assert len(frames) == 2  # the page keeps showing the camera
    before = status(edge)["results"]
    rec.start()
    wait_for(lambda s: s["online"] and s["results"] > before + 5, 60, "recovery", edge)
    wait_for(lambda s: s["feed"] == "annotated", 10, "annotated feed again", edge)
