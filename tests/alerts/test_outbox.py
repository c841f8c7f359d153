"""The outbox against real parts: a real SQLite file, the real dashboard on 127.0.0.1, a real HTTP receiver."""
from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from recognizer.alerting.outbox import Outbox, OutboxConfig
from recognizer.alerting.rules import AlertEngine, AlertThresholds
from recognizer.alerting.sinks import DashboardSink, DashboardTarget, StatusReporter, WebhookSink
from recognizer.station.types import StationSnapshot
from shared.alert_wire import AlertEvent
from shared.results import FaceResult
from tests.alerts.conftest import Dashboard, LogLines, Receiver, free_port

pytestmark = pytest.mark.timeout(120)


def fast(path: Path, **kw) -> OutboxConfig:  # noqa: ANN003
    return OutboxConfig(path=path, backoff_initial_s=0.05, backoff_max_s=0.4, **kw)


def incidents(jpeg: bytes, stations: int = 3) -> list[AlertEvent]:
    """Real incident event sequences from the rules: a stranger at each desk for 20 s, then gone."""
    events: list[AlertEvent] = []
    th = AlertThresholds(update_every_s=2.0)
    for s in range(stations):
        eng = AlertEngine(f"desk-{s:02d}", th)
        for i in range(300):
            t = 1_700_000_000 + i / 10
            faces = [FaceResult((0, 50 + i, 50 + i, 0), 1, "unknown", liveness="live")] if i < 200 else \
                [FaceResult((0, 90, 90, 0), 2, "known", "alice", liveness="live")]
            events += eng.observe(t, faces, "alice", None, evidence=jpeg)
    return events


def test_dashboard_down_recognizer_restarted_every_event_exactly_once(tmp_path, dashboard: Dashboard, stranger_jpeg):
    events = incidents(stranger_jpeg)
    states = [e.state for e in events]
    assert states.count("open") == 3 and states.count("closed") == 3 and states.count("update") >= 3
    target = DashboardTarget(dashboard.url, dashboard.token)
    path = tmp_path / "outbox.sqlite3"

    # the restart falls between incidents (one open across it is closed by the restart: the next test)
    half = max(i + 1 for i, e in enumerate(events[: len(events) // 2 + 1]) if e.state == "closed")
    # the dashboard is down: events are stored and retried, nothing is lost
    first = Outbox(fast(path), [DashboardSink(target)])
    first.start()
    for ev in events[:half]:
        first.put(ev)
    time.sleep(1.0)
    assert first.pending() == half
    first.stop(flush_timeout_s=0.2)  # the recognizer stops with events pending

    # a new recognizer process on the same file; more alerts while the dashboard is still down
    second = Outbox(fast(path), [DashboardSink(target)])
    assert second.pending() == half
    second.start()
    for ev in events[half:]:
        second.put(ev)
    time.sleep(0.5)
    dashboard.start()
    try:
        assert second.flush(30), f"{second.pending()} events still pending"
    finally:
        second.stop()

    got = dashboard.query("SELECT event_id, state FROM alert_events")
    assert sorted(e for e, _ in got) == sorted(e.event_id for e in events)
    alerts = dashboard.query("SELECT alert_id, type, station_id, ended_at FROM alerts")
    assert sorted(a for a, *_ in alerts) == sorted({e.alert_id for e in events})
    assert all(t == "unknown_face" and ended is not None for _, t, _, ended in alerts)
    # never sent twice: every POST was a first delivery (201), none answered "duplicate"
    posts = [code for p, code in dashboard.responses if p == "/api/alerts"]
    assert posts == [201] * len(events)
    for (blob,) in dashboard.query("SELECT data FROM evidence WHERE kind = 'image'"):
        assert cv2.imdecode(np.frombuffer(blob, np.uint8), cv2.IMREAD_COLOR) is not None
    # delivered rows lose their images; the file stays small
    third = Outbox(fast(path), [])
    assert third.pending() == 0
    third.stop()


def test_wrong_token_is_parked_with_the_reason(tmp_path, dashboard: Dashboard, stranger_jpeg):
    dashboard.start()
    box = Outbox(fast(tmp_path / "o.sqlite3"), [DashboardSink(DashboardTarget(dashboard.url, "wrong-token-" + "x" * 20))])
    with LogLines("recognizer.alerting.outbox") as logs:
        box.start()
        ev = incidents(stranger_jpeg, 1)[0]
        box.put(ev)
        assert box.flush(10)
        box.stop()
    parked = dict(Outbox(fast(tmp_path / "o.sqlite3"), []).parked())
    assert "HTTP 401" in parked[ev.event_id]["dashboard"] and "token" in parked[ev.event_id]["dashboard"]
    assert any(line.startswith("ERROR") and "401" in line and "parked" in line for line in logs.lines), logs.lines
    assert [c for p, c in dashboard.responses if p == "/api/alerts"] == [401]  # tried once, not forever


def test_retries_503_and_connection_refused_then_delivers_in_order(tmp_path, stranger_jpeg):
    port = free_port()
    box = Outbox(fast(tmp_path / "o.sqlite3"), [WebhookSink(f"http://127.0.0.1:{port}/hook")])
    box.start()
    events = incidents(stranger_jpeg, 1)
    for ev in events:
        box.put(ev)
    time.sleep(0.8)  # nothing listens: connection refused, backing off
    receiver = Receiver(port, script=(503, 503, 429))
    try:
        assert box.flush(20)
        box.stop()
        got = receiver.json_bodies()
        assert receiver.answers[:3] == [503, 503, 429]
        delivered = [b["event_id"] for b, code in zip(got, receiver.answers) if code == 200]
        assert delivered == [e.event_id for e in events]  # oldest first, each once
        assert all("image_b64" not in b for b in got)
        first = got[0]
        assert first["type"] == "unknown_face" and first["state"] == "open" and first["started_at"].count(":") >= 3
    finally:
        receiver.stop()


def test_webhook_with_images_and_both_sinks(tmp_path, dashboard: Dashboard, stranger_jpeg):
    dashboard.start()
    receiver = Receiver()
    try:
        box = Outbox(fast(tmp_path / "o.sqlite3"), [
            DashboardSink(DashboardTarget(dashboard.url, dashboard.token)), WebhookSink(receiver.url, include_images=True)])
        box.start()
        ev = incidents(stranger_jpeg, 1)[0]
        box.put(ev)
        assert box.flush(10)
        box.stop()
        body = receiver.json_bodies()[0]
        import base64

        assert base64.b64decode(body["image_b64"]) == stranger_jpeg
        assert receiver.requests[0][1]["Content-Type"] == "application/json"
        assert dashboard.query("SELECT event_id FROM alert_events") == [(ev.event_id,)]
    finally:
        receiver.stop()


def test_a_down_webhook_does_not_hold_up_the_dashboard(tmp_path, dashboard: Dashboard, stranger_jpeg):
    dashboard.start()
    box = Outbox(fast(tmp_path / "o.sqlite3"), [
        DashboardSink(DashboardTarget(dashboard.url, dashboard.token)), WebhookSink(f"http://127.0.0.1:{free_port()}/")])
    box.start()
    events = incidents(stranger_jpeg, 2)
    for ev in events:
        box.put(ev)
    deadline = time.time() + 15
    while len(dashboard.query("SELECT event_id FROM alert_events")) < len(events) and time.time() < deadline:
        time.sleep(0.1)
    assert len(dashboard.query("SELECT event_id FROM alert_events")) == len(events)
    assert box.pending() == len(events)  # still owed to the webhook
    box.stop(flush_timeout_s=0.1)


def test_bounded_by_count_and_bytes_with_log_lines(tmp_path, stranger_jpeg):
    big = stranger_jpeg * (400_000 // len(stranger_jpeg) + 1)  # ~400 KB per event
    cfg = OutboxConfig(path=tmp_path / "o.sqlite3", max_events=10, max_bytes=2 * 1024 * 1024)
    box = Outbox(cfg, [WebhookSink(f"http://127.0.0.1:{free_port()}/")])  # never started: nothing delivered
    events = incidents(stranger_jpeg, 3)
    with LogLines("recognizer.alerting.outbox") as logs:
        for ev in events[:14]:
            box.put(AlertEvent(**{**ev.__dict__, "image": big if ev.image else None, "best_image": big}))
    assert box.pending() == 10
    assert any("WARNING" in line and "dropped the evidence images" in line for line in logs.lines)
    assert sum("ERROR" in line and "dropping the oldest" in line for line in logs.lines) == 4
    box.stop()
    import sqlite3

    with sqlite3.connect(cfg.path) as db:
        rows = db.execute("SELECT payload, LENGTH(image) FROM outbox WHERE delivered_at IS NULL").fetchall()
        total = db.execute("SELECT SUM(COALESCE(LENGTH(image),0) + COALESCE(LENGTH(best_image),0)) FROM outbox").fetchone()[0]
    assert total <= cfg.max_bytes
    for payload, size in rows:
        meta = json.loads(payload)
        if meta["state"] == "open":
            assert size  # an opening event always keeps an image (the placeholder when its own was dropped)


def test_status_reporter_against_the_dashboard(dashboard: Dashboard):
    dashboard.start()
    st = StationSnapshot(1, "desk-07", "alice", "127.0.0.1:5", time.time(), frames=10, fps=12.5,
                         faces=(FaceResult((0, 9, 9, 0), 1, "known", "alice"), FaceResult((0, 9, 9, 0), 2, "unknown")),
                         last_frame_at=time.time(), camera="ok")
    stations = [st]
    rep = StatusReporter(DashboardTarget(dashboard.url, dashboard.token), lambda: list(stations), interval_s=0.2)
    rep.report_once()
    row = dashboard.query("SELECT station_id, fps, recognizer_connected, login_name, faces FROM station_status")
    assert row == [("desk-07", 12.5, 1, "alice", 2)]
    stations[0] = st = replace(st, camera="lost")  # the edge lost its camera: still connected, no stale fps or faces
    rep.report_once()
    assert dashboard.query("SELECT fps, recognizer_connected, faces FROM station_status") == [(0.0, 1, 0)]
    stations[0] = replace(st, camera="ok", last_frame_at=time.time() - 10)  # no frame answered for 10 s: stale too
    rep.report_once()
    assert dashboard.query("SELECT fps FROM station_status") == [(0.0,)]
    stations.clear()
    rep.report_once()  # the station left: reported once as not connected
    assert dashboard.query("SELECT recognizer_connected, fps FROM station_status") == [(0, 0.0)]
    rep.start()
    rep.stop()
