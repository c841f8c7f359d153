"""The gallery API on every backend: provenance stored, bad input refused, concurrent writers numbered in order,
the same photo stored once, the long-poll woken by a write."""
from __future__ import annotations

import base64
import hashlib
import threading
import time

import numpy as np

from tests.dashboard.conftest import Tokens


def body(person: str = "kit", image: bytes = b"photo-1", **over: object) -> dict:
    vec = np.random.default_rng(len(image)).normal(0, 0.09, 128).astype("<f4")
    out = {"person": person, "vector": base64.b64encode(vec.tobytes()).decode(),
           "model": "dlib_face_recognition_resnet_model_v1", "source": "capture:desk-01",
           "photo_sha256": hashlib.sha256(image).hexdigest(), "enrolled_by": "admin", "station_id": "desk-01",
           "grant_id": 7}
    out.update(over)
    return out


def test_an_encoding_is_stored_with_its_provenance_and_followed(app, tokens: Tokens, jpeg: bytes) -> None:
    client, h = app.test_client(), Tokens.header(tokens.service)
    r = client.post("/api/gallery/encodings", json={**body(), "photo": base64.b64encode(jpeg).decode()}, headers=h)
    assert r.status_code == 201, r.json
    change = r.json["change"]
    assert change["op"] == "add" and change["seq"] == 1 and change["person"] == "kit"
    got = client.get("/api/gallery/changes?after=0", headers=h).json
    assert got["head"] == 1 and got["changes"] == [change] and not got["more"]
    enc = client.get("/api/gallery/people", headers=h).json["people"][0]["encodings"][0]
    assert (enc["station_id"], enc["enrolled_by"], enc["grant_id"], enc["via"], enc["has_photo"]) == (
        "desk-01", "admin", 7, "recognizer-1", True)
    # the same photo again: stored once, the first change answered
    again = client.post("/api/gallery/encodings", json=body(), headers=h)
    assert again.status_code == 200 and again.json["duplicate"] and again.json["change"]["seq"] == 1
    # removal: a numbered change, the vector gone from the log
    assert client.delete("/api/gallery/people/kit", headers=h).json == {"removed": 1, "seq": 2}
    changes = client.get("/api/gallery/changes?after=0", headers=h).json["changes"]
    assert [c["op"] for c in changes] == ["add", "remove"] and "vector" not in changes[0]
    assert client.delete("/api/gallery/people/kit", headers=h).status_code == 404


def test_bad_requests_are_refused_with_a_reason(app, tokens: Tokens) -> None:
    client, h = app.test_client(), Tokens.header(tokens.service)
    assert client.get("/api/gallery/changes").status_code == 401
    assert client.get("/api/gallery/changes", headers=Tokens.header(tokens.desk01)).status_code == 403
    zero = base64.b64encode(np.zeros(128, "<f4").tobytes()).decode()
    nan = base64.b64encode(np.full(128, np.nan, "<f4").tobytes()).decode()
    for bad, why in ((body(vector="AAAA"), "512 bytes"), (body(vector=zero), "norm"), (body(vector=nan), "NaN"),
                     (body(vector="!!"), "base64"), (body(person="../etc"), "person"),
                     (body(photo_sha256="x" * 64), "hex"), (body(grant_id=True), "grant_id"),
                     (body(photo="bm90IGEganBlZw=="), "JPEG")):
        r = client.post("/api/gallery/encodings", json=bad, headers=h)
        assert r.status_code == 400 and why.lower() in r.json["error"].lower(), (why, r.json)
    assert client.get("/api/gallery/changes?after=5", headers=h).status_code == 409  # a copy of another gallery
    assert client.get("/api/gallery/changes?limit=0", headers=h).status_code == 400
    for wait in ("nan", "-1", "inf", "1e9", "soon"):
        assert client.get(f"/api/gallery/changes?wait={wait}", headers=h).status_code == 400, wait
    assert client.get("/api/gallery/changes?after=0", headers=h).json["head"] == 0  # nothing was stored


def test_writers_at_once_get_every_number_once_in_order(app, tokens: Tokens) -> None:
    h, n = Tokens.header(tokens.service), 12
    barrier, codes = threading.Barrier(n), []

    def add(i: int) -> None:
        client = app.test_client()
        barrier.wait()
        codes.append(client.post("/api/gallery/encodings", json=body(f"p{i}", f"photo-{i}".encode()), headers=h).status_code)

    threads = [threading.Thread(target=add, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert codes == [201] * n
    got = app.test_client().get("/api/gallery/changes?after=0&limit=5", headers=h).json
    assert [c["seq"] for c in got["changes"]] == [1, 2, 3, 4, 5] and got["more"] and got["head"] == n
    rest = app.test_client().get("/api/gallery/changes?after=5", headers=h).json["changes"]
    assert [c["seq"] for c in rest] == list(range(6, n + 1))
    assert sorted(c["person"] for c in got["changes"] + rest) == sorted(f"p{i}" for i in range(n))


def test_a_waiting_follower_is_answered_when_a_change_comes(sqlite_app, sqlite_tokens: Tokens) -> None:
    h = Tokens.header(sqlite_tokens.service)
    t0 = time.monotonic()
    empty = sqlite_app.test_client().get("/api/gallery/changes?after=0&wait=0.5", headers=h).json
    waited = time.monotonic() - t0
    assert empty["changes"] == [] and waited >= 0.45  # the baseline: nothing came, it waited it out
    answer: dict = {}

    def follow() -> None:
        t = time.monotonic()
        answer["body"] = sqlite_app.test_client().get("/api/gallery/changes?after=0&wait=20", headers=h).json
        answer["s"] = time.monotonic() - t

    t = threading.Thread(target=follow)
    t.start()
    time.sleep(0.3)
    assert sqlite_app.test_client().post("/api/gallery/encodings", json=body(), headers=h).status_code == 201
    t.join(timeout=25)
    assert [c["seq"] for c in answer["body"]["changes"]] == [1]
    assert answer["s"] < 0.3 + 10 * waited  # woken by the write, not by the 20 s deadline


def test_waiting_followers_are_bounded_when_many_come_at_once(sqlite_app, sqlite_tokens: Tokens) -> None:
    from dashboard.gallery import ChangeNotifier
    from dashboard.gallery_api import NOTIFIER_EXT

    sqlite_app.extensions[NOTIFIER_EXT] = ChangeNotifier(4)
    h, n = Tokens.header(sqlite_tokens.service), 10
    barrier, answers = threading.Barrier(n), []

    def follow() -> None:
        client = sqlite_app.test_client()
        barrier.wait()
        t = time.monotonic()
        r = client.get("/api/gallery/changes?after=0&wait=20", headers=h)
        answers.append((r.status_code, time.monotonic() - t, r.headers.get("Retry-After")))

    threads = [threading.Thread(target=follow) for _ in range(n)]
    for t in threads:
        t.start()
    wait_until = time.monotonic() + 10
    while len(answers) < n - 4 and time.monotonic() < wait_until:
        time.sleep(0.01)
    refused = [a for a in answers if a[0] == 503]
    assert len(refused) == n - 4 and all(a[2] == "5" for a in refused)  # answered at once, with when to retry
    assert sqlite_app.test_client().post("/api/gallery/encodings", json=body(), headers=h).status_code == 201
    for t in threads:
        t.join(timeout=25)
    assert sorted(a[0] for a in answers) == [200] * 4 + [503] * (n - 4)
    # the places are given back: one more follower may wait again
    assert sqlite_app.test_client().get("/api/gallery/changes?after=1&wait=0.1", headers=h).status_code == 200
