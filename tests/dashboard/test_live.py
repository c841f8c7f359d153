"""The live event stream over a real socket, and the broker's promise never to block ingestion."""
from __future__ import annotations

import json
import threading
import time
import uuid

import requests

from dashboard.events import Broker
from tests.dashboard.conftest import PASSWORD, login, meta


def _session_for(live_server) -> requests.Session:  # noqa: ANN001
    """A requests session logged in through the real login form."""
    login(live_server.app.test_client())  # creates the account
    s = requests.Session()
    page = s.get(f"{live_server.url}/login", timeout=5).text
    csrf = page.split('name="csrf_token" value="')[1].split('"')[0]
    resp = s.post(f"{live_server.url}/login", data={"username": "viewer", "password": PASSWORD, "csrf_token": csrf},
                  allow_redirects=False, timeout=5)
    assert resp.status_code == 302
    return s


def test_posted_alert_arrives_on_the_event_stream(live_server, sqlite_tokens, jpeg):
    viewer = _session_for(live_server)
    got: list[dict] = []
    ready = threading.Event()

    def listen() -> None:
        with viewer.get(f"{live_server.url}/api/events", stream=True, timeout=10) as resp:
            assert resp.headers["Content-Type"].startswith("text/event-stream")
            ready.set()
            event = None
            for line in resp.iter_lines(decode_unicode=True):
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: ") and event == "alert":
                    got.append(json.loads(line[6:]))
                    return

    t = threading.Thread(target=listen, daemon=True)
    t.start()
    assert ready.wait(5)
    deadline = time.monotonic() + 5
    while live_server.app.extensions["facemon"].broker.subscriber_count == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    m = meta()
    resp = requests.post(f"{live_server.url}/api/alerts", headers={"Authorization": f"Bearer {sqlite_tokens.desk01}"},
                         files={"meta": (None, json.dumps(m)), "image": ("e.jpg", jpeg, "image/jpeg")}, timeout=5)
    assert resp.status_code == 201
    t.join(5)
    assert got == [{"alert_id": m["alert_id"], "status": "created"}]


def test_slow_subscriber_is_dropped_and_never_blocks_publish():
    broker = Broker(queue_size=3)
    slow, fast = broker.subscribe(), broker.subscribe()
    start = time.monotonic()
    for i in range(10):
        broker.publish("alert", str(i))
        assert fast.get(0.1) == ("alert", str(i))  # a reader that keeps up gets everything
    assert time.monotonic() - start < 1.0
    assert slow.dropped and not fast.dropped
    assert broker.subscriber_count == 1
    assert list(broker.stream(slow, 0.05)) == ["retry: 2000\n\n"], "a dropped subscriber's stream ends at once"


def test_stream_sends_keepalives_and_ends_on_close():
    broker = Broker()
    sub = broker.subscribe()
    stream = broker.stream(sub, heartbeat_s=0.05)
    assert next(stream).startswith("retry:")
    assert next(stream) == ": keep-alive\n\n"
    broker.publish("station", '{"station_id": "desk-01"}')
    assert next(stream) == 'event: station\ndata: {"station_id": "desk-01"}\n\n'
    broker.close()
    assert list(stream) == []
    assert broker.subscriber_count == 0


def test_concurrent_redeliveries_over_a_real_socket_store_each_event_once(live_server_db, tokens, jpeg):
    """Many threads deliver the open, update and closed events of the same incidents at once, each event
    several times: every incident ends closed with both images, and each event is stored once."""
    from concurrent.futures import ThreadPoolExecutor

    import sqlalchemy as sa

    from dashboard.models import Alert, AlertEvent
    from dashboard.services import services

    incidents = [uuid.uuid4().hex for _ in range(4)]
    events = []
    for alert_id in incidents:
        for state in ("open", "update", "closed"):
            m = meta(alert_id=alert_id, state=state, ended_at="2025-05-01T10:30:00+05:30" if state == "closed" else None)
            events.extend([m] * 3)  # the outbox may deliver the same message more than once

    def deliver(m: dict) -> tuple[int, str]:
        files = {"meta": (None, json.dumps(m)), "image": ("e.jpg", jpeg, "image/jpeg")}
        if m["state"] != "open":
            files = {"meta": files["meta"], "best_image": ("b.jpg", jpeg, "image/jpeg")}
        resp = requests.post(f"{live_server_db.url}/api/alerts", files=files, timeout=20,
                             headers={"Authorization": f"Bearer {tokens.desk01}"})
        return resp.status_code, resp.json()["status"]

    with ThreadPoolExecutor(max_workers=12) as pool:
        answers = list(pool.map(deliver, events))
    firsts = [a for a in answers if a[0] == 201]
    assert len(firsts) == len(incidents) * 3 and all(a == (200, "duplicate") for a in answers if a[0] != 201)
    with services(live_server_db.app).sessions() as db:
        assert db.scalar(sa.select(sa.func.count()).select_from(AlertEvent)) == len(incidents) * 3
        rows = db.scalars(sa.select(Alert)).all()
    assert sorted(a.alert_id for a in rows) == sorted(incidents)
    assert all(a.state == "closed" and a.opened_seen for a in rows)


def test_oversized_upload_gets_413_over_a_real_socket(live_server, sqlite_tokens):
    m = meta()
    resp = requests.post(f"{live_server.url}/api/alerts", headers={"Authorization": f"Bearer {sqlite_tokens.desk01}"}, timeout=10,
                         files={"meta": (None, json.dumps(m)), "image": ("e.jpg", b"\xff\xd8\xff" + bytes(6 * 1024 * 1024), "image/jpeg")})
    assert resp.status_code == 413 and "more than the 5242880 allowed" in resp.json()["error"]
