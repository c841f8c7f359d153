"""A station that moves to another recognizer node: the incidents its old session left open are closed with the
reason and the nodes, once, on every backend; a late close from the old node keeps that first reason."""
from __future__ import annotations

import datetime as dt
import threading
import uuid

from dashboard.alert_summary import summarize
from tests.dashboard.conftest import Tokens, login, meta, multipart

UTC = dt.timezone.utc


def status(client, token: str, node: str, since: dt.datetime, station: str = "desk-01"):  # noqa: ANN001, ANN201
    return client.post(f"/api/stations/{station}/status", headers=Tokens.header(token), json={
        "fps": 5.0, "recognizer_connected": True, "faces": 1, "node": node, "session": f"{node}/{since.timestamp()}",
        "connected_at": since.isoformat()})


def open_alert(client, token: str, jpeg: bytes, started: dt.datetime, **over: object) -> dict:  # noqa: ANN001
    m = meta(started_at=started.isoformat(), **over)
    assert client.post("/api/alerts", data=multipart(m, jpeg), headers=Tokens.header(token)).status_code == 201
    return m


def test_a_moved_station_has_its_old_incidents_closed_once_with_where_it_went(app, tokens: Tokens, jpeg: bytes) -> None:
    client = app.test_client()
    t0 = dt.datetime.now(UTC) - dt.timedelta(minutes=5)
    assert status(client, tokens.service, "node1", t0).status_code == 200
    old = open_alert(client, tokens.service, jpeg, t0 + dt.timedelta(seconds=5))
    other_desk = open_alert(client, tokens.service, jpeg, t0 + dt.timedelta(seconds=6), station_id="desk-02")
    moved_at = t0 + dt.timedelta(minutes=1)
    # the same report again and again, from several threads at once: the move is handled once
    barrier = threading.Barrier(6)

    def report() -> None:
        barrier.wait()
        assert status(app.test_client(), tokens.service, "node3", moved_at).status_code == 200

    threads = [threading.Thread(target=report) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    new = open_alert(client, tokens.service, jpeg, moved_at + dt.timedelta(seconds=2))
    status(client, tokens.service, "node3", moved_at)
    login(client)
    got = {a["alert_id"]: a for a in client.get("/api/alerts").json["alerts"]}
    assert got[old["alert_id"]]["state"] == "closed"
    details = got[old["alert_id"]]["details"]
    assert (details["closed_by"], details["moved_from"], details["moved_to"]) == ("station_moved", "node1", "node3")
    assert "moved from recognizer node1 to node3" in summarize(got[old["alert_id"]], dt.datetime.now(UTC)).reason
    assert got[new["alert_id"]]["state"] == "open" and got[other_desk["alert_id"]]["state"] == "open"
    # the old node comes back and closes what it left open: the first reason stands
    late = meta(alert_id=old["alert_id"], event_id=uuid.uuid4().hex, state="closed", started_at=old["started_at"],
                ended_at=(moved_at + dt.timedelta(minutes=3)).isoformat(), details={"closed_by": "recognizer_restart"})
    r = client.post("/api/alerts", data=multipart(late), headers=Tokens.header(tokens.service),
                    content_type="multipart/form-data")
    assert r.status_code == 201, r.json
    again = client.get(f"/api/alerts/{old['alert_id']}").json
    assert again["details"]["closed_by"] == "station_moved" and again["ended_at"] == got[old["alert_id"]]["ended_at"]


def test_a_bad_session_in_a_status_report_is_refused(app, tokens: Tokens) -> None:
    client, h = app.test_client(), Tokens.header(tokens.service)
    for bad in ({"node": "n1"}, {"node": "n1", "session": "x" * 161, "connected_at": "2026-12-02T10:00:00Z"},
                {"node": "n1", "session": "s", "connected_at": "yesterday"},
                {"node": "n1", "session": "s", "connected_at": "2026-12-02T10:00:00"}):
        r = client.post("/api/stations/desk-01/status", headers=h, json={"fps": 1.0, **bad})
        assert r.status_code == 400, (bad, r.json)
