"""Every failure of a desk is a state and an alert: station_offline opened and closed once (real databases),
states a supervisor can read, one log line per change, alert rows that say what happened."""
from __future__ import annotations

import datetime as dt
import logging
import threading
import time

import pytest
import requests

from dashboard.alert_summary import distance_band, summarize
from dashboard.services import services
from dashboard.station_state import StationThresholds, station_state
from dashboard.stations import open_offline_alerts
from tests.dashboard.conftest import LiveServer, build_app, login

UTC = dt.timezone.utc
NOW = dt.datetime(2026, 12, 2, 10, 0, 0, tzinfo=UTC)


def state(**kw):  # noqa: ANN003, ANN201
    base = dict(now=NOW, last_seen=NOW, last_connected=NOW, recognizer_connected=True, fps=14.0, camera="ok",
                camera_error=None, degraded=(), report_window_s=15.0, th=StationThresholds(offline_after_s=15.0))
    base.update(kw)
    return station_state(**base)


def test_states_worst_first_with_a_reason():
    ago = lambda s: NOW - dt.timedelta(seconds=s)  # noqa: E731
    assert state().state == "online"
    assert state(last_seen=None, last_connected=None).state == "never"
    # the recognizer said the edge left 5 s ago: not yet an alert, and the page says when one follows
    leaving = state(last_seen=ago(5), last_connected=ago(8), recognizer_connected=False)
    assert leaving.state == "leaving" and "left its recognizer" in leaving.text and "15 s" in leaving.text
    off = state(last_seen=ago(14), last_connected=ago(20), recognizer_connected=False)
    assert off.state == "offline" and off.level == "bad" and "20 s" in off.text
    long_gone = state(last_seen=ago(600), last_connected=ago(605), recognizer_connected=False)
    assert "left its recognizer" in long_gone.text and "10 min 5 s" in long_gone.text  # the cause stays what it was
    # a recognizer that died says nothing: the last report (in session) goes stale
    silent = state(last_seen=ago(16), last_connected=ago(16))
    assert silent.state == "offline" and "recognizer down" in silent.text
    assert state(last_seen=ago(10), last_connected=ago(10)).state == "online"  # one missed report is not gone
    # a pulled cable: reported in session just now, but the desk was last heard 16 s ago (it sends nothing)
    cable = state(last_seen=ago(0.5), last_connected=ago(16))
    assert cable.state == "offline" and "sends nothing" in cable.text and "16 s" in cable.text
    assert state(last_seen=ago(0.5), last_connected=ago(14)).state == "online"  # under the threshold: in session
    lost = state(camera="lost", camera_error="no frame for 3 s", fps=0.0)
    assert lost.state == "camera_lost" and "no frame for 3 s" in lost.text and lost.level == "bad"
    slow = state(fps=0.8)
    assert slow.state == "slow" and "0.8 frames/s" in slow.text and "overloaded" in slow.text
    disk = state(degraded=("disk_full",))
    assert disk.state == "degraded" and "disk is full" in disk.text
    overloaded = state(degraded=("slow", "disk_full"), fps=4.0)  # the recognizer says its share is too small
    assert overloaded.state == "slow" and "it serves each desk 4.0 frames/s" in overloaded.text
    assert "too many desks" in overloaded.text and "disk is full" in overloaded.text
    assert state(recognizer_connected=False, last_connected=None).state == "idle"  # never had a session: no alert


def test_alert_row_says_who_what_distance_reason_duration():
    opened = {"type": "wrong_person", "login_name": "alice", "started_at": "2026-12-02T09:58:00+00:00", "ended_at": None,
              "details": {"names": ["bob"], "expected": "alice", "distance": 0.41}}
    s = summarize(opened, NOW)
    assert (s.expected, s.seen) == ("alice", "bob")
    assert s.distance.startswith("0.41 (close") and s.duration == "2 min so far" and "not alice" in s.reason
    closed = {**opened, "ended_at": "2026-12-02T09:58:30+00:00",
              "details": {**opened["details"], "duration_s": 30.0, "closed_by": "station_disconnected"}}
    assert summarize(closed, NOW).duration == "30 s" and "desk disconnected" in summarize(closed, NOW).reason
    tamper = summarize({"type": "camera_tamper", "login_name": "", "started_at": "2026-12-02T09:59:50+00:00",
                        "details": {"reason": "camera_lost", "reasons": ["camera_lost"], "error": "USB camera gone"}}, NOW)
    assert "camera lost" in tamper.seen and "USB camera gone" in tamper.reason
    assert distance_band(0.75).startswith("0.75 (far") and distance_band(None) == ""


def _report(client, token, **body):  # noqa: ANN001, ANN003, ANN202
    base = {"fps": 14.0, "recognizer_connected": True, "login_name": "alice", "faces": 1, "camera": "ok"}
    return client.post("/api/stations/desk-01/status", json={**base, **body}, headers={"Authorization": f"Bearer {token}"})


def test_offline_opens_once_even_when_raced_and_closes_when_back(app, tokens, caplog):
    """Real backends: eight watchers (as eight dashboard processes would) race to open the incident."""
    caplog.set_level(logging.INFO, logger="dashboard.stations")
    client = app.test_client()
    for _ in range(10):  # ten status posts of an unchanged desk: one state line (never -> online)
        assert _report(client, tokens.desk01).status_code == 200
    assert len([r for r in caplog.records if "-> online" in r.getMessage()]) == 1
    svc = services(app)
    later = dt.datetime.now(UTC) + dt.timedelta(seconds=16)
    assert open_offline_alerts(svc.sessions, svc.writer, svc.station_rules, now=dt.datetime.now(UTC)) == []  # not gone yet
    results: list[list[str]] = []
    barrier = threading.Barrier(8)

    def watcher() -> None:
        barrier.wait()
        results.append(open_offline_alerts(svc.sessions, svc.writer, svc.station_rules, now=later))

    threads = [threading.Thread(target=watcher) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    opened = [a for r in results for a in r]
    assert len(opened) == 1, results
    login(client)
    alerts = client.get("/api/alerts?type=station_offline").json["alerts"]
    assert [a["alert_id"] for a in alerts] == opened and alerts[0]["state"] == "open"
    assert alerts[0]["login_name"] == "alice" and "recognizer down" in alerts[0]["details"]["reason"]
    assert open_offline_alerts(svc.sessions, svc.writer, svc.station_rules, now=later + dt.timedelta(seconds=5)) == []  # still the one
    # the desk is back: the incident closes, and the row says how long it was gone
    # the recognizer says the desk left (no login any more): the desk keeps who was there
    assert _report(client, tokens.desk01, recognizer_connected=False, login_name=None).json["state"] == "leaving"
    assert client.get("/api/stations").json["stations"][0]["login_name"] == "alice"
    assert _report(client, tokens.desk01, camera="lost", camera_error="no frame for 3 s", fps=0.0).json["state"] == "camera_lost"
    back = client.get(f"/api/alerts/{opened[0]}").json
    assert back["state"] == "closed" and back["details"]["closed_by"] == "station_back"
    stations = {s["station_id"]: s for s in client.get("/api/stations").json["stations"]}
    assert stations["desk-01"]["state"] == "camera_lost" and "no frame for 3 s" in stations["desk-01"]["state_text"]
    page = client.get("/fragment/stations").get_data(as_text=True)
    assert "Camera lost: no frame for 3 s" in page
    assert _report(client, tokens.desk01, degraded=["nonsense"]).status_code == 400
    assert _report(client, tokens.desk01, camera="sideways").status_code == 400


def test_a_silent_desk_raises_station_offline_by_itself(tmp_path):
    """The real watcher thread, a real socket: a desk reported once, then nothing (recognizer killed)."""
    app = build_app(f"sqlite:///{tmp_path / 'dash.sqlite3'}", offline_after_s=5.0)
    server = LiveServer(app)
    try:
        from dashboard import station_tokens

        with services(app).sessions() as db:
            token = station_tokens.create_token(db, "desk-01", "station")
        t0 = time.monotonic()
        assert requests.post(f"{server.url}/api/stations/desk-01/status", timeout=5, headers={"Authorization": f"Bearer {token}"},
                             json={"fps": 12.0, "recognizer_connected": True, "login_name": "alice"}).status_code == 200
        client = app.test_client()
        login(client)
        deadline = t0 + 20
        alerts: list = []
        while time.monotonic() < deadline and not alerts:
            time.sleep(0.5)
            alerts = client.get("/api/alerts?type=station_offline").json["alerts"]
        assert alerts, "no station_offline within 20 s"
        took = time.monotonic() - t0
        assert 5.0 <= took < 20, took  # not before the threshold
        row = client.get("/").get_data(as_text=True)
        assert "station offline" in row and "no reports" in row
    finally:
        server.stop()
        services(app).broker.close()
        services(app).engine.dispose()


@pytest.mark.parametrize("value", [0.0, 5.0])
def test_offline_threshold_setting(tmp_path, value):
    app = build_app(f"sqlite:///{tmp_path / 'd.sqlite3'}", offline_after_s=value)
    assert services(app).station_rules.th.offline_after_s == (float("inf") if value == 0 else 5.0)
    services(app).broker.close()


def test_the_watch_never_locks_out_a_session_that_reads_then_writes(tmp_path):
    """On SQLite a read transaction that turns into a write is refused at once ('database is locked') while another
    connection holds the write lock; the watch looks every interval, so it must look without taking that lock."""
    from dashboard import station_watch
    from dashboard.models import Setting

    app = build_app(f"sqlite:///{tmp_path / 'dash.sqlite3'}")
    svc = services(app)
    station_watch.start(svc, interval_s=0.001)  # a second watcher, looking as often as it can
    try:
        for i in range(60):
            with svc.sessions() as db:  # a plain session: read first, then write (as CLI commands and tests do)
                db.get(Setting, "secret_key")
                time.sleep(0.002)
                db.add(Setting(key=f"k{i}", value="v"))
                db.commit()
    finally:
        svc.broker.close()
        svc.engine.dispose()
