"""A desk whose network cable is pulled sends nothing and closes nothing (no FIN, no RST): its recognizer keeps it
in session until its idle timeout (15 s), yet the dashboard's offline clock starts when the desk was last heard, so
its station_offline alert comes about as soon as that of a desk whose edge is killed (a clean close).

Real recognizer (TCP server, status reporter) and real dashboard (werkzeug on 127.0.0.1, its station watch thread);
two edge processes sending frames; at the same moment one is SIGKILLed (the kernel closes its socket) and the other
SIGSTOPped (its socket stays open, silent: the pulled cable). Baseline: the killed desk, in the same window."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from dashboard.services import services
from recognizer.alerting.sinks import DashboardTarget
from recognizer.app import RecognizerApp, RecognizerSettings
from recognizer.server.stations import ServerConfig
from recognizer.station.pipeline import PipelineConfig
from recognizer.vision.detect import EngineConfig
from tests.conftest import REPO
from tests.dashboard.conftest import LiveServer, build_app, login, make_jpeg

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]
OFFLINE_AFTER_S = 5.0  # the dashboard's threshold, shortened; the recognizer keeps its default idle timeout (15 s)

# an edge in miniature: HELLO, then a small frame every 0.5 s, each answer read, until it is stopped or killed
_EDGE = r"""
import socket, sys, time
from shared import protocol
from shared.stream import MessageStream
host, port, station, path = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
jpeg = open(path, "rb").read()
stream = MessageStream(socket.create_connection((host, port), timeout=30))
stream.send(protocol.hello(station, "alice", "secret"))
assert stream.recv().kind == protocol.MessageKind.WELCOME
seq = 0
while True:
    seq += 1
    stream.send(protocol.frame(seq, time.time(), jpeg))
    while stream.recv().kind != protocol.MessageKind.RESULT:
        pass
    if seq == 2:
        print("streaming", flush=True)
    time.sleep(0.5)
"""


def _offline(app) -> dict[str, tuple[str, str, dict]]:  # noqa: ANN001
    """station -> (alert id, state, details) of its station_offline alerts (asserting one per station)."""
    client = app.test_client()
    login(client)
    alerts = client.get("/api/alerts?type=station_offline").json["alerts"]
    out = {a["station_id"]: (a["alert_id"], a["state"], a["details"]) for a in alerts}
    assert len(out) == len(alerts), alerts  # never two for one desk
    return out


def test_a_pulled_cable_is_alerted_as_soon_as_a_killed_edge(tmp_path, sample_index_dir) -> None:
    import shutil

    shutil.copytree(sample_index_dir, tmp_path / "encodings")
    dash = build_app(f"sqlite:///{tmp_path / 'dash.sqlite3'}", offline_after_s=OFFLINE_AFTER_S)
    server = LiveServer(dash)
    from dashboard import station_tokens

    with services(dash).sessions() as db:
        token = station_tokens.create_token(db, "recognizer", "service")
    idle_s = ServerConfig().idle_timeout_s
    settings = RecognizerSettings(
        engine=EngineConfig(detector="hog"), server=ServerConfig(host="127.0.0.1", port=0, token="secret"),
        pipeline=PipelineConfig(liveness=False), index_dir=tmp_path / "encodings",
        known_faces=tmp_path / "known_faces", workers=1,
        dashboard=DashboardTarget(server.url, token), status_interval_s=0.5,
    )
    rec = RecognizerApp(settings)
    host, port = rec.start()
    frame = tmp_path / "frame.jpg"
    frame.write_bytes(make_jpeg((320, 240), text="desk"))
    edges: dict[str, subprocess.Popen] = {}
    try:
        for desk in ("desk-killed", "desk-unplugged"):
            edges[desk] = subprocess.Popen([sys.executable, "-c", _EDGE, host, str(port), desk, str(frame)],
                                           cwd=REPO, stdout=subprocess.PIPE, text=True,
                                           env={**os.environ, "PYTHONPATH": str(REPO)})
        for desk, proc in edges.items():
            assert proc.stdout.readline().strip() == "streaming", desk
        time.sleep(2 * settings.status_interval_s + 1)  # both reported in session, with frames
        client = dash.test_client()
        login(client)
        states = {s["station_id"]: s["state"] for s in client.get("/api/stations").json["stations"]}
        assert states["desk-killed"] != "offline" and states["desk-unplugged"] != "offline", states

        t0 = time.monotonic()
        edges["desk-killed"].send_signal(signal.SIGKILL)  # a clean close: the kernel sends FIN
        edges["desk-unplugged"].send_signal(signal.SIGSTOP)  # the cable: the socket stays open, nothing comes
        took: dict[str, float] = {}
        while time.monotonic() - t0 < idle_s + OFFLINE_AFTER_S + 15 and len(took) < 2:
            for desk in _offline(dash):
                took.setdefault(desk, time.monotonic() - t0)
            time.sleep(0.2)
        print(f"kill -> station_offline {took.get('desk-killed', -1):.1f} s, pull -> station_offline "
              f"{took.get('desk-unplugged', -1):.1f} s (offline_after_s {OFFLINE_AFTER_S:g}, idle timeout {idle_s:g} s, "
              f"load {os.getloadavg()[0]:.1f})")
        assert set(took) == {"desk-killed", "desk-unplugged"}, took
        # counted from its last frame (up to one frame interval and one report interval before the kill)
        assert took["desk-killed"] >= OFFLINE_AFTER_S - 1.0
        # the silent desk's clock started when it went silent, not when its recognizer gave up on it (15 s later)
        assert took["desk-unplugged"] - took["desk-killed"] < 3.0, took
        assert took["desk-unplugged"] < idle_s, took
        offline = _offline(dash)
        assert "sends nothing" in offline["desk-unplugged"][2]["reason"], offline

        # the recognizer keeps reporting it in session (silent) until its idle timeout, then says it left: the same
        # one incident stays open throughout (neither closed by those reports nor opened twice)
        first = offline["desk-unplugged"][0]
        while time.monotonic() - t0 < idle_s + 3 * settings.status_interval_s + 2:
            time.sleep(0.5)
            now = _offline(dash)
            assert now["desk-unplugged"][:2] == (first, "open"), now
        connected = {s["station_id"]: s["recognizer_connected"] for s in client.get("/api/stations").json["stations"]}
        assert connected["desk-unplugged"] is False  # the recognizer has dropped it by now
    finally:
        for proc in edges.values():
            proc.send_signal(signal.SIGCONT)
            proc.kill()
            proc.wait(10)
        rec.stop()
        server.stop()
        services(dash).broker.close()
        services(dash).engine.dispose()
