"""Grouping from the in-memory index of the queue, correct across dashboard processes: two apps (two processes'
worth of services) on one SQLite file, real face encodings, the queue changed by either."""
from __future__ import annotations

import sqlalchemy as sa

from dashboard.library_models import ReviewCrop, ReviewFace
from dashboard.services import services
from tests.dashboard.conftest import Tokens, build_app, csrf_of, login
from tests.library.conftest import BIDEN, OBAMA, OBAMA2, face_body, face_of


def test_two_dashboard_processes_group_one_queue(sqlite_app, tmp_path, engine) -> None:  # noqa: F811
    other = build_app(f"sqlite:///{tmp_path / 'dashboard.sqlite3'}")  # the second process: its own index
    try:
        token = Tokens(sqlite_app).service
        h = {"Authorization": f"Bearer {token}"}
        a, b = sqlite_app.test_client(), other.test_client()
        ia, ib = services(sqlite_app).review_index, services(other).review_index
        ob1, ob2, bi = face_of(engine, OBAMA), face_of(engine, OBAMA2), face_of(engine, BIDEN)
        g1 = a.post("/api/review/faces", json=face_body(*ob1), headers=h).json["group"]
        g2 = b.post("/api/review/faces", json=face_body(*ob2), headers=h).json["group"]
        assert g2 == g1, "B groups the face with the one A queued (read from the database once)"
        assert ib.reads == 1 and len(ib) == 2
        g3 = b.post("/api/review/faces", json=face_body(*bi), headers=h).json["group"]
        assert g3 != g1 and ib.reads == 1, "nothing changed elsewhere: B read no vector for its next face"
        # a better crop for the same alert and track: a new row, the old one gone with its crop
        again = face_body(*ob2)
        first = a.post("/api/review/faces", json=again, headers=h).json
        second = a.post("/api/review/faces", json=again, headers=h).json
        assert second["group"] == first["group"] == g1
        with services(sqlite_app).sessions() as db:
            assert db.scalar(sa.select(sa.func.count()).select_from(ReviewFace)) == 4
            assert db.scalar(sa.select(sa.func.count()).select_from(ReviewCrop)) == 4
        # the same alert and track again, now with another face (SQLite gives the new row the old one's id): B sees it
        third = a.post("/api/review/faces", json={**again, "vector": face_body(*bi)["vector"]}, headers=h).json
        assert third["group"] == g3
        assert b.post("/api/review/faces", json=face_body(*bi, track=5), headers=h).json["group"] == g3
        assert ib._groups[ib._ids == third["id"]].tolist() == [g3], "B holds the row's new face, not the old one"
        # A's admin dismisses obama's group: B's index drops those faces before its next grouping
        login(a, "admin")
        assert a.post(f"/library/review/{g1}/stranger", data={"csrf_token": csrf_of(a)}).status_code == 302
        g5 = b.post("/api/review/faces", json=face_body(*ob1), headers=h).json["group"]
        assert g5 not in (g1, g3), "obama's faces left the queue: a new group"
        assert len(ib) == 4  # biden three times (g3) and obama anew
        # A syncs too: the same queue in both
        a.post("/api/review/faces", json=face_body(*bi, track=9), headers=h)
        with services(sqlite_app).sessions() as db:
            queued = sorted(db.scalars(sa.select(ReviewFace.id).where(ReviewFace.state == "queued")))
        b.post("/api/review/faces", json=face_body(*bi, track=10), headers=h)
        assert sorted(ia._ids.tolist()) == queued and sorted(ib._ids.tolist()) == sorted(queued + [max(ib._ids.tolist())])
    finally:
        services(other).broker.close()
        services(other).engine.dispose()
