"""A network camera that dies and comes back, end to end: a real MJPEG server on 127.0.0.1, the real edge
reading it, the real recognizer (dlib, encoder process), alerts to a webhook and station status to the
real dashboard.

What must hold: the edge says "camera lost" within a few seconds (/api/status, the picture, no stale
faces), the recognizer opens one `camera_tamper` incident with reason `camera_lost` and stops reporting
a stale frame rate, and all of it recovers within a few seconds of the camera coming back.
"""
from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest
import requests

from edge.config import EdgeConfig
from edge.runtime import Edge
from recognizer.alerting.sinks import station_report
from tests.alerts.conftest import Dashboard, Receiver
from tests.edge.conftest import MjpegServer, photo_frames

pytestmark = pytest.mark.slow
log = logging.getLogger(__name__)

STATION = "desk-cam"
TOKEN = "camera-lost-token"
FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "stranger_kit.jpg"


def poll(predicate: Callable[[], object], timeout: float, what: str, step: float = 0.05) -> float:
    """Seconds until `predicate()` is truthy; fails the test after `timeout` (a loaded machine is allowed for)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return time.monotonic() - start
        time.sleep(step)
    pytest.fail(f"{what}: not seen within {timeout:.0f} s")


@pytest.fixture
def stack(tmp_path: Path, sample_index_dir: Path) -> Iterator[tuple]:
    from recognizer.alerting.outbox import OutboxConfig
    from recognizer.alerting.sinks import DashboardTarget
    from recognizer.app import RecognizerApp, RecognizerSettings
    from recognizer.vision.detect import EngineConfig
    from recognizer.server.stations import ServerConfig

    dashboard = Dashboard(tmp_path / "dashboard.db")
    dashboard.start()
    webhook = Receiver()
    shutil.copytree(sample_index_dir, tmp_path / "encodings")
    app = RecognizerApp(RecognizerSettings(
        engine=EngineConfig(detector="hog"),  # HOG only: no sweep process
        server=ServerConfig(host="127.0.0.1", port=0, token=TOKEN, heartbeat_s=1.0, idle_timeout_s=10.0),
        index_dir=tmp_path / "encodings", known_faces=tmp_path / "known_faces", workers=1,
        outbox=OutboxConfig(path=tmp_path / "outbox.sqlite3", backoff_initial_s=0.2, backoff_max_s=1.0),
        dashboard=DashboardTarget(dashboard.url, dashboard.token), webhook_url=webhook.url + "/hook",
        status_interval_s=0.5,
    ))
    camera = MjpegServer(photo_frames(FIXTURE), fps=10.0).start()
    edge = None
    try:
        _, port = app.start()
        edge = Edge(EdgeConfig(source=camera.url, recognizer_port=port, station=STATION, login="alice",
                               token=TOKEN, web_port=0))
        edge.start()
        yield app, edge, camera, webhook, dashboard
    finally:
        if edge is not None:
            edge.stop()
        camera.kill()
        app.stop()
        webhook.stop()
        dashboard.stop()


def test_camera_lost_and_back_end_to_end(stack) -> None:
    app, edge, camera, webhook, dashboard = stack
    status_url = edge.url.replace("/video_feed_page", "/api/status")
    status = lambda: requests.get(status_url, timeout=5).json()  # noqa: E731
    alerts = lambda state: [b for b in webhook.json_bodies()  # noqa: E731
                            if b.get("type") == "camera_tamper" and b.get("state") == state]
    station = lambda: next((s for s in app.server.stations() if s.station == STATION), None)  # noqa: E731
    dash_row = lambda: dashboard.query(  # noqa: E731
        f"SELECT fps, recognizer_connected, faces FROM station_status WHERE station_id = '{STATION}'")

    poll(lambda: status()["online"] and status()["results"] > 5 and status()["camera"]["state"] == "ok", 90,
         "edge online with results")
    poll(lambda: status()["shown_faces"], 30, "a face in the list of the shown picture")
    poll(lambda: dash_row() and dash_row()[0][0] > 0, 20, "a frame rate on the dashboard")
    assert not alerts("open")

    camera.kill()  # the camera dies
    killed = time.monotonic()
    t_lost = poll(lambda: status()["camera"]["state"] == "lost", 15, "camera lost in /api/status")
    lost = status()
    assert lost["camera"]["running"] is False and lost["camera"]["error"]
    assert lost["camera"]["since"] <= time.time() - 2.0  # the time of the last frame, not of the report
    poll(lambda: status()["feed"] == "camera_lost", 5, "the camera-lost picture")
    assert status()["shown_faces"] == []  # no stale faces beside a dead picture
    capture = requests.post(edge.url.replace("/video_feed_page", "/api/capture"), json={"name": "Kit"}, timeout=10)
    assert capture.status_code == 503 and capture.json()["code"] == "camera_lost"

    poll(lambda: alerts("open"), 15, "camera_tamper open at the webhook")
    t_alert = time.monotonic() - killed
    opened = alerts("open")[0]
    assert opened["details"]["reason"] == "camera_lost" and opened["station_id"] == STATION
    poll(lambda: station() is not None and station().camera == "lost", 5, "the recognizer knows")
    assert station().fps == 0.0 and station_report(station(), time.time(), 3.0)["fps"] == 0.0
    poll(lambda: dash_row()[0][0] == 0.0 and dash_row()[0][1] == 1, 10, "dashboard: connected, 0 fps")

    time.sleep(6.0)  # dead long enough for the source's back-off to reach its cap
    assert len(alerts("open")) == 1  # one incident, not one per heartbeat
    results_before = status()["results"]
    camera.start()  # the camera comes back on the same port
    returned = time.monotonic()
    t_back = poll(lambda: status()["camera"]["state"] == "ok", 15, "camera ok again")
    poll(lambda: status()["results"] > results_before + 2, 20, "results again")
    t_results = time.monotonic() - returned
    poll(lambda: alerts("closed"), 15, "camera_tamper closed at the webhook")
    t_closed = time.monotonic() - returned
    closed = alerts("closed")[0]
    assert closed["alert_id"] == opened["alert_id"] and closed["details"].get("closed_by") == "camera_back"
    poll(lambda: status()["feed"] == "annotated", 10, "the annotated picture again")
    poll(lambda: dash_row()[0][0] > 0, 10, "a frame rate on the dashboard again")
    log.warning("after the camera died: 'camera lost' in /api/status %.1f s, alert open at the webhook %.1f s; "
                "after it came back: camera ok %.1f s, results %.1f s, alert closed %.1f s",
                t_lost, t_alert, t_back, t_results, t_closed)
    assert t_lost < 6.0 and t_back < 5.0
