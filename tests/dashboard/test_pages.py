"""Pages for people: login, CSRF, the live fragments, admin token management (SQLite file)."""
from __future__ import annotations

import re

from tests.dashboard.conftest import csrf_of, login, meta, multipart


def _post_alert(app, token: str, jpeg: bytes, **fields: object) -> str:  # noqa: ANN001
    m = meta(**fields)
    resp = app.test_client().post("/api/alerts", data=multipart(m, jpeg), headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 201
    return m["alert_id"]


def test_login_rejects_wrong_password_and_foreign_redirects(sqlite_app, sqlite_tokens):
    client = sqlite_app.test_client()
    login(client)  # creates "viewer"
    client.post("/logout", data={"csrf_token": csrf_of(client)})
    assert client.get("/").status_code == 302
    page = client.get("/login").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    bad = client.post("/login", data={"username": "viewer", "password": "wrong-password", "csrf_token": csrf})
    assert bad.status_code == 401 and "Wrong user name or password" in bad.get_data(as_text=True)
    no_csrf = client.post("/login", data={"username": "viewer", "password": "correct-horse-battery"})
    assert no_csrf.status_code == 400
    ok = client.post("/login?next=//evil.example/x", data={"username": "viewer", "password": "correct-horse-battery", "csrf_token": csrf})
    assert ok.status_code == 302 and ok.headers["Location"] == "/"


def test_index_lists_alerts_and_escapes_text(sqlite_app, sqlite_tokens, jpeg):
    alert_id = _post_alert(sqlite_app, sqlite_tokens.desk01, jpeg, login_name="o'brien")
    client = sqlite_app.test_client()
    login(client)
    html = client.get("/").get_data(as_text=True)
    assert f'id="alert-{alert_id}"' in html and "o&#39;brien" in html
    assert f"/api/alerts/{alert_id}/thumb" in html and 'href="/api/alerts.csv"' in html
    assert "http://" not in html.replace('http://www.w3.org', ''), "nothing loads from outside"


def test_fragment_respects_filters(sqlite_app, sqlite_tokens, jpeg):
    alert_id = _post_alert(sqlite_app, sqlite_tokens.desk01, jpeg, type="no_blink")
    client = sqlite_app.test_client()
    login(client)
    row = client.get(f"/fragment/alert/{alert_id}", query_string={"type": "no_blink", "next": "/?type=no_blink"})
    assert row.status_code == 200 and f'id="alert-{alert_id}"' in row.get_data(as_text=True)
    assert 'value="/?type=no_blink"' in row.get_data(as_text=True)
    assert client.get(f"/fragment/alert/{alert_id}", query_string={"type": "no_face"}).status_code == 204
    assert "desk-01" in client.get("/fragment/stations").get_data(as_text=True)


def test_admin_manages_station_tokens(sqlite_app, sqlite_tokens, jpeg):
    viewer = sqlite_app.test_client()
    login(viewer)
    assert viewer.get("/admin/tokens").status_code == 403
    admin = sqlite_app.test_client()
    login(admin, "admin")
    page = admin.post("/admin/tokens", data={"station_id": "desk-09", "kind": "station", "csrf_token": csrf_of(admin)})
    token = re.search(r'<code id="new-token">([^<]+)</code>', page.get_data(as_text=True)).group(1)
    alert_id = _post_alert(sqlite_app, token, jpeg, station_id="desk-09")
    assert alert_id
    assert token not in admin.get("/admin/tokens").get_data(as_text=True), "a token is shown only once"
    bad = admin.post("/admin/tokens", data={"station_id": "../x", "kind": "station", "csrf_token": csrf_of(admin)}, follow_redirects=True)
    assert "station_id" in bad.get_data(as_text=True)
    from dashboard.models import ApiToken
    from dashboard.services import services

    with services(sqlite_app).sessions() as db:
        token_id = db.query(ApiToken.id).filter(ApiToken.name == "desk-09").scalar()
    assert admin.post(f"/admin/tokens/{token_id}/revoke", data={"csrf_token": csrf_of(admin)}).status_code == 302
    resp = sqlite_app.test_client().post("/api/alerts", data=multipart(meta(station_id="desk-09"), jpeg),
                                         headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 401


def test_rows_keep_the_filter_after_acknowledge_and_pages_link(sqlite_app, sqlite_tokens, jpeg):
    ids = [_post_alert(sqlite_app, sqlite_tokens.desk01, jpeg, type="no_face") for _ in range(3)]
    client = sqlite_app.test_client()
    login(client)
    html = client.get("/?type=no_face&per_page=2").get_data(as_text=True)
    assert 'name="next" value="/?type=no_face&amp;per_page=2"' in html
    assert "page 1 of 2" in html and "page=2" in html
    html2 = client.get("/?type=no_face&per_page=2&page=2").get_data(as_text=True)
    assert sum(f'id="alert-{i}"' in html2 for i in ids) == 1 and "page=1" in html2
