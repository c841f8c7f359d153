"""No 5xx from a query string, on EVERY route of the dashboard and of the edge page (issue 15, item 8:
`/?endpoint=x` and `/?_method=DELETE` answered 500, query arguments were passed into `url_for`).

The routes come from each app's `url_map`, so a route added later is fuzzed too. Requests go over real sockets
to the production server, signed in (admin page session, station token, CSRF token sent), so each handler runs
past its guards with the hostile keys and values.
"""
from __future__ import annotations

import json
import threading
import time
from urllib.parse import quote

import numpy as np
import pytest
import requests

from dashboard import accounts, station_tokens
from dashboard.services import services
from edge.auth import AuthSettings, DashboardClient, SignIn
from edge.frames import LatestFrame
from edge.web import EdgeState, create_app
from shared.jpeg import encode_jpeg
from shared.web_server import WebServer, WebServerSettings
from tests.dashboard.conftest import PASSWORD, LiveServer, build_app, make_jpeg, meta

pytestmark = pytest.mark.timeout(240)

# keys that url_for, Werkzeug or Flask treat specially, keys the views read, and plain garbage
HOSTILE = [
    "endpoint=x", "_method=DELETE", "_external=1", "_anchor=x", "_scheme=javascript", "values=x", "filename=../../etc/passwd",
    "next=//evil.example/", "next=javascript:alert(1)", "page=-1", "per_page=0", "page=1&page=x",
    "from=xx", "to=9999-99-99", "state=%00", "type=../../x", "station=%ff%fe", "login_name=%3Cscript%3E",
    "%zz=%zz", "=", "__class__=1", "%C3%A9=%C3%BC", "x=" + "A" * 4000, "k" * 2000 + "=1", "alert_id=../x",
]
SAMPLE = {"filename": "app.js", "station_id": "desk-01", "which": "image", "token_id": "999"}
STREAMS = ("/api/events", "/video_feed")


def url_for_rule(rule, alert_id: str) -> str:  # noqa: ANN001
    path = rule.rule
    for arg in rule.arguments:
        value = alert_id if arg == "alert_id" else SAMPLE.get(arg, "x")
        path = path.replace(f"<{arg}>", value)
        for conv in ("int:", "path:", "any(image, best_image, thumb):"):
            path = path.replace(f"<{conv}{arg}>", value)
    return path


def fuzz(base: str, app, session: requests.Session, headers: dict, alert_id: str = "x") -> list:  # noqa: ANN001
    """Every rule x method x hostile query; returns the (method, url, status) of every 5xx."""
    bad = []
    rules = sorted(app.url_map.iter_rules(), key=lambda r: ("logout" in r.rule or "signout" in r.rule, r.rule))
    for rule in rules:
        path = url_for_rule(rule, alert_id)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            for query in HOSTILE:
                url = f"{base}{quote(path)}?{query}"
                r = session.request(method, url, headers=headers, timeout=30, allow_redirects=False,
                                    stream=path in STREAMS)
                if path in STREAMS:
                    r.raw.read(64) if r.status_code == 200 else None
                r.close()
                if r.status_code >= 500:
                    bad.append((method, url[:160], r.status_code))
    return bad


def test_no_5xx_from_any_query_on_any_dashboard_route(tmp_path):
    app = build_app(f"sqlite:///{tmp_path / 'd.sqlite3'}")
    with services(app).writer() as db:
        accounts.create_user(db, "ada", PASSWORD, "admin")
        token = station_tokens.create_token(db, "desk-01", "station")
    server = LiveServer(app)
    try:
        s = requests.Session()
        page = s.get(f"{server.url}/login", timeout=10).text
        csrf = page.split('name="csrf_token" value="')[1].split('"')[0]
        assert s.post(f"{server.url}/login", data={"username": "ada", "password": PASSWORD, "csrf_token": csrf},
                      timeout=30, allow_redirects=False).status_code == 302
        csrf = s.get(f"{server.url}/", timeout=10).text.split('name="csrf_token" value="')[1].split('"')[0]
        m = meta()
        r = requests.post(f"{server.url}/api/alerts", data={"meta": json.dumps(m)},
                          files={"image": ("evidence.jpg", make_jpeg(), "image/jpeg")},
                          headers={"Authorization": f"Bearer {token}"}, timeout=30)
        assert r.status_code in (200, 201), r.text
        # the two the issue found, first and by name
        for query in ("endpoint=x", "_method=DELETE"):
            assert s.get(f"{server.url}/?{query}", timeout=10).status_code == 200
        bad = fuzz(server.url, app, s, {"Authorization": f"Bearer {token}", "X-CSRF-Token": csrf}, m["alert_id"])
    finally:
        server.stop()
        services(app).close()
    assert not bad, bad[:20]


class _Link:
    def status(self) -> dict:
        return {"online": False}

    def enrol(self, name: str, timeout: float = 10.0, grant: str = "") -> dict:
        return {"ok": False, "code": "offline", "reason": "recognizer offline"}

    def set_login(self, login: str) -> None:
        pass

    def verify(self, *args: object, **kwargs: object) -> None:
        return None


def test_no_5xx_from_any_query_on_any_edge_route(tmp_path):
    dash = build_app(f"sqlite:///{tmp_path / 'd.sqlite3'}")
    with services(dash).writer() as db:
        accounts.create_user(db, "ada", PASSWORD, "admin")
        token = station_tokens.create_token(db, "desk-01", "station")
    dash_server = LiveServer(dash)
    display, stop = LatestFrame(), threading.Event()
    signin = SignIn(AuthSettings(station="desk-01"), DashboardClient(dash_server.url, token), _Link())
    state = EdgeState(display=display, link=_Link(), stop=stop, station="desk-01", auth=signin, secret_key="k" * 40,
                      max_viewers=6)
    app = create_app(state)
    edge = WebServer(app, WebServerSettings(threads=10, name="edge page"), on_stop=stop.set).start()
    jpeg = encode_jpeg(np.full((60, 80, 3), 90, np.uint8), 80, 0)

    def feed() -> None:  # frames flow, so a viewer that leaves is noticed at the next one
        while not stop.is_set():
            display.publish(jpeg)
            time.sleep(0.02)

    threading.Thread(target=feed, daemon=True).start()
    base = f"http://127.0.0.1:{edge.port}"
    try:
        s = requests.Session()
        csrf = s.get(f"{base}/signin", timeout=10).text.split('name="csrf-token" content="')[1].split('"')[0]
        r = s.post(f"{base}/api/signin", json={"username": "ada", "password": PASSWORD}, headers={"X-CSRF-Token": csrf},
                   timeout=30)
        assert r.status_code == 200 and r.json()["state"] == "signed_in", r.text
        bad = fuzz(base, app, s, {"X-CSRF-Token": csrf})
    finally:
        edge.stop()
        dash_server.stop()
        services(dash).close()
    assert not bad, bad[:20]
