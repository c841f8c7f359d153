"""Real recognizer (models, encoder process, TCP server) + raw protocol clients sending real photos → the real
dashboard on 127.0.0.1 receives the incidents with decodable JPEG evidence, then their close on disconnect."""
from __future__ import annotations

import json
import socket
import threading
import time

import cv2
import numpy as np
import pytest

from recognizer.alerting.outbox import OutboxConfig
from recognizer.alerting.rules import AlertThresholds
from recognizer.alerting.sinks import DashboardTarget
from recognizer.app import RecognizerApp, RecognizerSettings
from recognizer.vision.detect import EngineConfig
from recognizer.server.stations import ServerConfig
from recognizer.station.pipeline import PipelineConfig
from shared import protocol
from shared.protocol import MessageKind
from shared.stream import MessageStream
from tests.alerts.conftest import Dashboard
from tests.conftest import FIXTURES

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]


def stream_photo(address, station: str, login: str, jpeg: bytes, seconds: float, stop: threading.Event) -> int:
    """An edge in miniature: HELLO, then the same photo as frames (one in flight) for `seconds`."""
    sock = socket.create_connection(address, timeout=20)
    stream = MessageStream(sock)
    try:
        stream.send(protocol.hello(station, login, "secret"))
        assert stream.recv().kind == MessageKind.WELCOME
        seq, deadline = 0, time.time() + seconds
        while time.time() < deadline and not stop.is_set():
            seq += 1
            stream.send(protocol.frame(seq, time.time(), jpeg))
            reply = stream.recv()
            assert reply.kind == MessageKind.RESULT and "error" not in reply.header, reply.header
        return seq
    finally:
        stream.close()


def wait_for(dashboard: Dashboard, sql: str, n: int, timeout: float) -> list[tuple]:
    deadline = time.time() + timeout
    while True:
        rows = dashboard.query(sql)
        if len(rows) >= n or time.time() > deadline:
            return rows
        time.sleep(0.1)


def test_stranger_and_wrong_person_reach_the_dashboard(tmp_path, sample_index_dir, dashboard: Dashboard):
    import shutil

    shutil.copytree(sample_index_dir, tmp_path / "encodings")
    dashboard.start()
    settings = RecognizerSettings(
        engine=EngineConfig(detector="hog"),  # HOG only: no sweep process
        server=ServerConfig(host="127.0.0.1", port=0, token="secret", idle_timeout_s=10, heartbeat_s=2),
        pipeline=PipelineConfig(liveness=False),
        index_dir=tmp_path / "encodings", known_faces=tmp_path / "known_faces", workers=1,
        alerts=AlertThresholds(unknown_after_s=1.0, wrong_person_after_s=1.0, no_face_after_s=600, frozen_after_s=600),
        outbox=OutboxConfig(path=tmp_path / "outbox.sqlite3", backoff_initial_s=0.1, backoff_max_s=1.0),
        dashboard=DashboardTarget(dashboard.url, dashboard.token), status_interval_s=0.5,
    )
    app = RecognizerApp(settings)
    address = app.start()
    stop = threading.Event()
    try:
        t0 = time.time()
        stranger = threading.Thread(target=stream_photo, args=(address, "desk-01", "alice",
                                                                (FIXTURES / "stranger_kit.jpg").read_bytes(), 30, stop))
        wrong = threading.Thread(target=stream_photo, args=(address, "desk-02", "alice",
                                                             (FIXTURES / "obama_probe.jpg").read_bytes(), 30, stop))
        stranger.start()
        wrong.start()
        rows = wait_for(dashboard, "SELECT alert_id, station_id, type, login_name FROM alerts", 2, 60)
        latency = time.time() - t0
        got = {(station, kind, login) for _, station, kind, login in rows}
        assert ("desk-01", "unknown_face", "alice") in got, rows
        assert ("desk-02", "wrong_person", "alice") in got, rows
        print(f"first frame → both alerts on the dashboard: {latency:.1f} s (thresholds 1 s)")
        statuses = wait_for(dashboard, "SELECT station_id, recognizer_connected, faces FROM station_status", 2, 10)
        assert {(s, bool(c), f) for s, c, f in statuses} == {("desk-01", True, 1), ("desk-02", True, 1)}
        # the evidence is the annotated frame, a real JPEG
        for (blob,) in dashboard.query("SELECT data FROM evidence WHERE kind = 'image'"):
            img = cv2.imdecode(np.frombuffer(blob, np.uint8), cv2.IMREAD_COLOR)
            assert img is not None and img.shape[0] > 100
        details = {kind: json.loads(d) for kind, d in dashboard.query("SELECT type, details FROM alerts")}
        assert details["wrong_person"]["names"] == ["barack_obama"] and details["wrong_person"]["expected"] == "alice"
        # the stations leave: their incidents close (the sweeper sees the sessions end)
        stop.set()
        stranger.join(30)
        wrong.join(30)
        closed = wait_for(dashboard, "SELECT alert_id FROM alerts WHERE ended_at IS NOT NULL", len(rows), 20)
        assert len(closed) == len(rows)
        disconnected = wait_for(dashboard, "SELECT station_id FROM station_status WHERE recognizer_connected = 0", 2, 10)
        assert len(disconnected) == 2
    finally:
        stop.set()
        app.stop()
    # one incident per station and type, however many frames were sent; every event delivered once
    kinds = dashboard.query("SELECT station_id, type, COUNT(*) FROM alerts GROUP BY station_id, type")
    assert all(n == 1 for *_, n in kinds), kinds
    assert [c for p, c in dashboard.responses if p == "/api/alerts"].count(200) == 0  # no duplicates sent
