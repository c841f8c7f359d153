"""The alert API against real databases: SQLite file always, MariaDB and PostgreSQL when reachable.

Input checks that never reach the database run on SQLite only (`sqlite_app`); the rest on every backend.
"""
from __future__ import annotations

import base64
import io
import json
import uuid

import pytest
import sqlalchemy as sa
from PIL import Image

from dashboard.models import Alert, AlertEvent, Base, Evidence
from dashboard.services import services
from tests.dashboard.conftest import csrf_of, login, make_jpeg, meta, multipart


def post(client, tok: str, m, image=None, best=None):  # noqa: ANN001, ANN201
    return client.post("/api/alerts", data=multipart(m, image, best), headers={"Authorization": f"Bearer {tok}"},
                       content_type="multipart/form-data")


def count(app, model) -> int:  # noqa: ANN001
    with services(app).sessions() as db:
        return db.scalar(sa.select(sa.func.count()).select_from(model))


def test_open_alert_is_stored_with_its_evidence(app, tokens, jpeg):
    client = app.test_client()
    m = meta(details={"distance": 0.71, "note": "first sighting"})
    resp = post(client, tokens.desk01, m, jpeg)
    assert resp.status_code == 201, resp.json
    assert resp.json == {"status": "created", "alert_id": m["alert_id"]}
    login(client)
    got = client.get(f"/api/alerts/{m['alert_id']}").json
    assert got["station_id"] == "desk-01" and got["login_name"] == "alice" and got["type"] == "unknown_face"
    assert got["state"] == "open" and got["ended_at"] is None
    assert got["started_at"] == "2025-05-01T04:45:00+00:00"  # 10:15 at +05:30, kept as UTC
    assert got["details"] == {"distance": 0.71, "note": "first sighting"}
    image = client.get(got["image_url"])
    assert image.status_code == 200 and image.mimetype == "image/jpeg" and image.data == jpeg
    thumb = client.get(got["thumb_url"]).data
    with Image.open(io.BytesIO(thumb)) as img:
        assert img.format == "JPEG" and max(img.size) <= 240
    assert got["best_image_url"] is None
    assert client.get(f"/api/alerts/{m['alert_id']}/best_image").status_code == 404


def test_same_event_twice_is_stored_once(app, tokens, jpeg):
    client = app.test_client()
    m = meta()
    first = post(client, tokens.desk01, m, jpeg)
    again = post(client, tokens.desk01, m, jpeg)
    assert first.status_code == 201
    assert again.status_code == 200 and again.json["status"] == "duplicate"
    assert count(app, AlertEvent) == 1 and count(app, Alert) == 1 and count(app, Evidence) == 2  # image + thumb


def test_closed_before_open_loses_nothing(app, tokens, jpeg):
    client = app.test_client()
    alert_id = uuid.uuid4().hex
    best = make_jpeg(text="best frame")
    closed = meta(alert_id=alert_id, state="closed", ended_at="2025-05-01T10:20:00+05:30", details={"frames": 40})
    assert post(client, tokens.service, closed, best=best).status_code == 201
    opened = meta(alert_id=alert_id, state="open", details={"distance": 0.8, "frames": 1})
    resp = post(client, tokens.service, opened, jpeg)
    assert resp.status_code == 201 and resp.json["status"] == "updated"
    login(client)
    got = client.get(f"/api/alerts/{alert_id}").json
    assert got["state"] == "closed", "a late 'open' must not re-open a closed incident"
    assert got["ended_at"] == "2025-05-01T04:50:00+00:00"
    assert got["details"] == {"distance": 0.8, "frames": 40}, "the later state's details win, the open's fill gaps"
    assert client.get(got["image_url"]).data == jpeg
    assert client.get(got["best_image_url"]).data == best


def test_update_replaces_best_image(app, tokens, jpeg):
    client = app.test_client()
    alert_id = uuid.uuid4().hex
    first_best, second_best = make_jpeg(text="one"), make_jpeg(text="two")
    assert post(client, tokens.desk01, meta(alert_id=alert_id), jpeg, first_best).status_code == 201
    resp = post(client, tokens.desk01, meta(alert_id=alert_id, state="update", details={"score": 0.9}), best=second_best)
    assert resp.status_code == 201 and resp.json["status"] == "updated"
    login(client)
    assert client.get(f"/api/alerts/{alert_id}/best_image").data == second_best
    assert client.get(f"/api/alerts/{alert_id}/image").data == jpeg
    assert client.get(f"/api/alerts/{alert_id}").json["details"] == {"distance": 0.71, "score": 0.9}


@pytest.mark.parametrize("header", [None, "Bearer nope-not-a-token-at-all-xxxxxx", "Basic dXNlcjpwYXNz", "Bearer "])
def test_missing_or_wrong_token_is_401(sqlite_app, sqlite_tokens, jpeg, header):
    headers = {"Authorization": header} if header else {}
    resp = sqlite_app.test_client().post("/api/alerts", data=multipart(meta(), jpeg), headers=headers)
    assert resp.status_code == 401 and "token" in resp.json["error"]
    assert count(sqlite_app, Alert) == 0


def test_station_token_may_post_only_for_itself(app, tokens, jpeg):
    client = app.test_client()
    resp = post(client, tokens.desk02, meta(station_id="desk-01"), jpeg)
    assert resp.status_code == 403 and "desk-02" in resp.json["error"]
    assert post(client, tokens.service, meta(station_id="desk-07"), jpeg).status_code == 201
    assert count(app, Alert) == 1


def test_alert_id_of_another_station_is_refused(app, tokens, jpeg):
    client = app.test_client()
    alert_id = uuid.uuid4().hex
    assert post(client, tokens.desk01, meta(alert_id=alert_id), jpeg).status_code == 201
    resp = post(client, tokens.desk02, meta(alert_id=alert_id, station_id="desk-02", state="closed"))
    assert resp.status_code == 409
    login(client)
    assert client.get(f"/api/alerts/{alert_id}").json["state"] == "open"


def test_sql_looking_strings_are_stored_as_text(app, tokens, jpeg):
    client = app.test_client()
    evil = "Robert' -- x"
    sql = "'; DROP TABLE alerts; --"
    m = meta(login_name=evil, details={"note": sql, "q": "1' OR '1'='1"})
    assert post(client, tokens.desk01, m, jpeg).status_code == 201
    assert post(client, tokens.desk01, meta(login_name="bob"), jpeg).status_code == 201
    login(client)
    got = client.get("/api/alerts", query_string={"login_name": evil}).json
    assert got["total"] == 1 and got["alerts"][0]["login_name"] == evil
    assert got["alerts"][0]["details"]["note"] == sql
    assert client.get("/api/alerts", query_string={"station": "x' OR '1'='1"}).json["total"] == 0
    with services(app).sessions() as db:
        assert set(sa.inspect(db.get_bind()).get_table_names()) >= {t.name for t in Base.metadata.sorted_tables}
    assert count(app, Alert) == 2


def _png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8)).save(out, format="PNG")
    return out.getvalue()


BAD_META = [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "JSON object"),
    (json.dumps({k: v for k, v in meta().items() if k != "station_id"}), "station_id"),
    (json.dumps(meta(type="alien")), "type 'alien'"),
    (json.dumps(meta(state="reopened")), "state"),
    (json.dumps(meta(started_at="2025-05-01T10:15:00")), "time zone"),
    (json.dumps(meta(started_at="yesterday")), "ISO-8601"),
    (json.dumps(meta(event_id="not-a-uuid")), "event_id"),
    (json.dumps(meta(station_id="../etc")), "station_id"),
    (json.dumps(meta(details="text")), "details"),
    (json.dumps(meta(details={"x": "y" * 17000})), "more than"),
]


@pytest.mark.parametrize("raw,reason", BAD_META, ids=[r for _, r in BAD_META])
def test_bad_meta_is_400_with_a_reason(sqlite_app, sqlite_tokens, jpeg, raw, reason):
    resp = post(sqlite_app.test_client(), sqlite_tokens.desk01, raw, jpeg)
    assert resp.status_code == 400
    assert reason in resp.json["error"]
    assert count(sqlite_app, AlertEvent) == 0


@pytest.mark.parametrize("image,reason", [
    (b"", "empty"),
    (None, "needs the part 'image'"),
    (b"GIF89a not a jpeg", "FF D8 FF"),
    ("png", "FF D8 FF"),
    (b"\xff\xd8\xff\xe0" + b"\x00garbage" * 50, "does not decode"),
], ids=["empty", "missing", "gif", "png", "jpeg-magic-but-garbage"])
def test_non_jpeg_image_is_400(sqlite_app, sqlite_tokens, image, reason):
    data = _png() if image == "png" else image
    resp = post(sqlite_app.test_client(), sqlite_tokens.desk01, meta(), data)
    assert resp.status_code == 400 and reason in resp.json["error"]
    assert count(sqlite_app, Alert) == 0


def test_wrong_content_type_is_400(sqlite_app, sqlite_tokens):
    resp = sqlite_app.test_client().post("/api/alerts", json=meta(), headers={"Authorization": f"Bearer {sqlite_tokens.desk01}"})
    assert resp.status_code == 400 and "multipart/form-data" in resp.json["error"]


def test_oversized_body_is_413(sqlite_app, sqlite_tokens):
    big = b"\xff\xd8\xff\xe0" + b"\x00" * (5 * 1024 * 1024 + 10)
    resp = post(sqlite_app.test_client(), sqlite_tokens.desk01, meta(), big)
    assert resp.status_code == 413 and "error" in resp.json
    assert count(sqlite_app, Alert) == 0


def test_legacy_dashboard_shape(app, tokens, jpeg):
    client = app.test_client()
    body = {"login_name": "alice", "time": "2025-05-01T09:00:00Z", "type": "Unknown Face",
            "image": base64.b64encode(jpeg).decode()}
    first = client.post("/dashboard", json=body, headers={"Authorization": f"Bearer {tokens.desk01}"})
    assert first.status_code == 201, first.json
    again = client.post("/dashboard", json=body, headers={"Authorization": f"Bearer {tokens.desk01}"})
    assert again.json["status"] == "duplicate"
    bad = client.post("/dashboard", json={**body, "image": "%%%not-base64"}, headers={"Authorization": f"Bearer {tokens.desk01}"})
    assert bad.status_code == 400 and "base64" in bad.json["error"]
    no_station = client.post("/dashboard", json=body, headers={"Authorization": f"Bearer {tokens.service}"})
    assert no_station.status_code == 400 and "station_id" in no_station.json["error"]
    assert client.post("/dashboard", json=body).status_code == 401
    login(client)
    got = client.get(f"/api/alerts/{first.json['alert_id']}").json
    assert (got["station_id"], got["type"], got["started_at"]) == ("desk-01", "unknown_face", "2025-05-01T09:00:00+00:00")
    assert client.get(got["image_url"]).data == jpeg


def test_station_status_and_online(app, tokens):
    client = app.test_client()
    auth = {"Authorization": f"Bearer {tokens.desk01}"}
    ok = client.post("/api/stations/desk-01/status", json={"fps": 12.5, "recognizer_connected": True, "login_name": "alice", "faces": 1}, headers=auth)
    assert ok.status_code == 200
    assert client.post("/api/stations/desk-02/status", json={"fps": 1}, headers=auth).status_code == 403
    assert client.post("/api/stations/desk-01/status", json={"fps": "fast"}, headers=auth).status_code == 400
    assert client.post("/api/stations/desk-01/status", json={"recognizer_connected": "yes"}, headers=auth).status_code == 400
    assert client.get("/api/stations").status_code == 401
    login(client)
    stations = {s["station_id"]: s for s in client.get("/api/stations").json["stations"]}
    assert stations["desk-01"]["online"] is True and stations["desk-01"]["fps"] == 12.5
    assert stations["desk-01"]["recognizer_connected"] is True and stations["desk-01"]["faces"] == 1
    assert stations["desk-02"]["online"] is False and stations["desk-02"]["last_seen"] is None  # has a token, never reported


def _seed(app, tokens, jpeg):  # noqa: ANN001, ANN202
    client = app.test_client()
    specs = [("desk-01", "alice", "unknown_face", "2025-05-01T08:00:00Z"), ("desk-02", "bob", "no_face", "2025-05-01T09:00:00Z"),
             ("desk-01", "alice", "no_blink", "2025-05-02T08:00:00Z"), ("desk-02", "bob", "unknown_face", "2025-05-03T08:00:00Z")]
    ids = []
    for station, who, kind, when in specs:
        m = meta(station_id=station, login_name=who, type=kind, started_at=when)
        assert post(client, tokens.service, m, jpeg).status_code == 201
        ids.append(m["alert_id"])
    post(client, tokens.service, meta(alert_id=ids[1], station_id="desk-02", state="closed", ended_at="2025-05-01T09:05:00Z"))
    return client, ids


def test_filters_pagination_and_order(app, tokens, jpeg):
    client, ids = _seed(app, tokens, jpeg)
    login(client)
    everything = client.get("/api/alerts").json
    assert [a["alert_id"] for a in everything["alerts"]] == ids[::-1], "newest first"

    def ids_for(**q):  # noqa: ANN003, ANN202
        resp = client.get("/api/alerts", query_string=q)
        assert resp.status_code == 200, resp.json
        return {a["alert_id"] for a in resp.json["alerts"]}

    assert ids_for(station="desk-01") == {ids[0], ids[2]}
    assert ids_for(login_name="bob") == {ids[1], ids[3]}
    assert ids_for(type="unknown_face") == {ids[0], ids[3]}
    assert ids_for(state="closed") == {ids[1]}
    assert ids_for(state="open") == {ids[0], ids[2], ids[3]}
    assert ids_for(**{"from": "2025-05-02"}) == {ids[2], ids[3]}
    assert ids_for(**{"from": "2025-05-01", "to": "2025-05-02"}) == {ids[0], ids[1], ids[2]}
    page2 = client.get("/api/alerts", query_string={"per_page": 3, "page": 2}).json
    assert page2["total"] == 4 and [a["alert_id"] for a in page2["alerts"]] == [ids[0]]
    assert client.get("/api/alerts", query_string={"per_page": 201}).status_code == 400
    assert client.get("/api/alerts", query_string={"state": "weird"}).status_code == 400
    assert client.get("/api/alerts", query_string={"from": "May 1"}).status_code == 400


def test_csv_export_uses_filters(app, tokens, jpeg):
    client, ids = _seed(app, tokens, jpeg)
    post(client, tokens.service, meta(station_id="desk-01", login_name="alice", type="no_face", details={"n": "=cmd|calc"}), jpeg)
    assert client.get("/api/alerts.csv").status_code == 401
    login(client)
    resp = client.get("/api/alerts.csv", query_string={"station": "desk-01"})
    assert resp.status_code == 200 and resp.mimetype == "text/csv"
    import csv

    rows = list(csv.DictReader(io.StringIO(resp.get_data(as_text=True))))
    assert len(rows) == 3 and {r["station_id"] for r in rows} == {"desk-01"}
    assert {ids[0], ids[2]} <= {r["alert_id"] for r in rows}


def test_read_endpoints_need_a_session(app, tokens, jpeg):
    client = app.test_client()
    m = meta()
    post(client, tokens.desk01, m, jpeg)
    for path in ("/api/alerts", f"/api/alerts/{m['alert_id']}", f"/api/alerts/{m['alert_id']}/image", "/api/stations", "/api/events"):
        resp = client.get(path, headers={"Authorization": f"Bearer {tokens.service}"})
        assert resp.status_code == 401, path
    assert client.get("/").status_code == 302


def test_acknowledge_records_who_when_and_comment(app, tokens, jpeg):
    client = app.test_client()
    m = meta()
    post(client, tokens.desk01, m, jpeg)
    login(client)
    no_csrf = client.post(f"/alerts/{m['alert_id']}/ack", data={"comment": "x"})
    assert no_csrf.status_code == 400
    resp = client.post(f"/alerts/{m['alert_id']}/ack", data={"comment": "checked on camera; it was the invigilator",
                                                             "csrf_token": csrf_of(client), "next": "https://evil.example/"})
    assert resp.status_code == 302 and resp.headers["Location"] == "/"
    got = client.get(f"/api/alerts/{m['alert_id']}").json
    assert got["state"] == "acknowledged" and got["acknowledged_by"] == "viewer"
    assert got["ack_comment"] == "checked on camera; it was the invigilator" and got["acknowledged_at"]
    assert {a["alert_id"] for a in client.get("/api/alerts?state=acknowledged").json["alerts"]} == {m["alert_id"]}


def test_schema_from_migrations_matches_the_models(app):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    with services(app).engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_purge_deletes_old_evidence_and_keeps_rows(app, tokens, jpeg):
    from dashboard.store import purge_evidence

    client = app.test_client()
    import datetime as dt

    now = dt.datetime.now(dt.timezone.utc)
    old, new = meta(started_at=(now - dt.timedelta(days=31)).isoformat()), meta(started_at=(now - dt.timedelta(days=29)).isoformat())
    post(client, tokens.desk01, old, jpeg)
    post(client, tokens.desk01, new, jpeg)
    with services(app).sessions() as db:
        assert purge_evidence(db, 30) == 2  # image + thumb of the old one
    login(client)
    assert client.get(f"/api/alerts/{old['alert_id']}/image").status_code == 410
    assert client.get(f"/api/alerts/{new['alert_id']}/image").data == jpeg
    got = client.get(f"/api/alerts/{old['alert_id']}").json
    assert got["evidence_purged_at"] and got["image_url"] is None
    assert count(app, Alert) == 2
