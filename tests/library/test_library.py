"""The face library on real parts: real face photos through the one Enroller, a SQLite file, a recognizer node's
GalleryStore following the change log over a real socket, the review queue fed over HTTP."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import sqlalchemy as sa

from dashboard.gallery_models import GalleryChange, GalleryEncoding
from dashboard.library_models import AuditEntry, ReviewFace
from dashboard.services import services
from tests.dashboard.conftest import Tokens, csrf_of, login
from tests.library.conftest import ALEX, BIDEN, FIXTURES, OBAMA, OBAMA2, face_body, face_of, upload


def _changes(app) -> list[tuple[str, str]]:  # noqa: ANN001
    with services(app).sessions() as db:
        return [(c.op, c.person) for c in db.scalars(sa.select(GalleryChange).order_by(GalleryChange.seq))]


def _audit(app, looks: bool = False) -> list[tuple[str, str, str]]:  # noqa: ANN001
    """The audit's changes (looks such as person.view left out unless asked for)."""
    with services(app).sessions() as db:
        return [(a.actor, a.action, a.subject) for a in db.scalars(sa.select(AuditEntry).order_by(AuditEntry.id))
                if looks or "." not in a.action]


def test_people_page_add_flag_remove_rename_with_audit(admin, sqlite_app) -> None:
    r = upload(admin, "/library/people", OBAMA, name="obama")
    assert r.status_code == 302 and r.location.endswith("/library/people/obama")
    assert upload(admin, "/library/people/obama/photos", OBAMA2).status_code == 302
    # the quality gate's reasons, as at a desk: two people in view; not a picture
    r = upload(admin, "/library/people/obama/photos", FIXTURES / "two_people.jpg", )
    page = admin.get(r.location).get_data(as_text=True)
    assert "Refused: 2 faces in the image" in page, page
    bad = upload(admin, "/library/people/obama/photos", Path(__file__))
    assert "Refused:" in admin.get(bad.location).get_data(as_text=True)
    # a wrong photo (Biden filed under obama) is enrolled but flagged as far from the others
    assert upload(admin, "/library/people/obama/photos", BIDEN).status_code == 302
    page = admin.get("/library/people/obama").get_data(as_text=True)
    assert page.count("far-flag") == 1 and "upload:ageitgey_biden.jpg" in page
    with services(sqlite_app).sessions() as db:
        rows = db.execute(sa.select(GalleryEncoding.id, GalleryEncoding.source)).all()
    biden_id = next(i for i, s in rows if "biden" in s)
    assert f'id="photo-{biden_id}" class="far"' in page
    assert admin.get("/library/people").get_data(as_text=True).count('id="person-obama"') == 1
    # remove the wrong photo, rename, remove the person: each a numbered change, each audited
    assert admin.post(f"/library/photos/{biden_id}/remove", data={"csrf_token": csrf_of(admin)}).status_code == 302
    assert admin.post("/library/people/obama/rename", data={"csrf_token": csrf_of(admin), "new_name": "barack"}).status_code == 302
    assert admin.get("/library/people/obama").status_code == 404
    assert "far-flag" not in admin.get("/library/people/barack").get_data(as_text=True)
    assert admin.post("/library/people/barack/remove", data={"csrf_token": csrf_of(admin)}).status_code == 302
    assert [op for op, _ in _changes(sqlite_app)] == ["add", "add", "add", "drop", "remove", "add", "add", "remove"]
    assert ("admin", "person.view", "obama") in _audit(sqlite_app, looks=True)  # opening the page is a look
    assert [a[1:] for a in _audit(sqlite_app)] == [("add_photo", "obama")] * 3 + [
        ("remove_photo", "obama"), ("rename", "barack"), ("remove_person", "barack")]
    assert {a[0] for a in _audit(sqlite_app)} == {"admin"}
    # no CSRF token, a viewer, a bad name: refused, nothing changed
    n = len(_changes(sqlite_app))
    assert admin.post("/library/people/x/remove").status_code == 400
    assert admin.post("/library/people/..%2Fx/rename", data={"csrf_token": csrf_of(admin), "new_name": "y"}).status_code in (400, 404)
    viewer = sqlite_app.test_client()
    login(viewer, "viewer")
    assert viewer.get("/library/people").status_code == 403
    assert len(_changes(sqlite_app)) == n


def test_a_page_change_reaches_a_following_node_within_2_s(live_server, sqlite_tokens, tmp_path) -> None:  # noqa: F811
    from recognizer.identity.gallery import GalleryClient, GalleryStore

    app = live_server.app
    admin = app.test_client()
    login(admin, "admin")
    store = GalleryStore(GalleryClient(live_server.url, sqlite_tokens.service), tmp_path / "node", wait_s=5.0)
    store.start()
    try:
        assert store.wait_loaded(10)

        def reaches(action, check) -> float:  # noqa: ANN001
            assert action().status_code == 302
            t0 = time.monotonic()  # the change is committed when the page answers
            while not check(store.index):
                assert time.monotonic() - t0 < 2.0, "the change did not reach the node within 2 s"
                time.sleep(0.01)
            return time.monotonic() - t0

        reaches(lambda: upload(admin, "/library/people", OBAMA, name="obama"), lambda ix: ix.names == ("obama",))
        reaches(lambda: upload(admin, "/library/people/obama/photos", OBAMA2), lambda ix: len(ix) == 2)
        first = min(store._rows)
        reaches(lambda: admin.post(f"/library/photos/{first}/remove", data={"csrf_token": csrf_of(admin)}),
                lambda ix: len(ix) == 1)
        reaches(lambda: admin.post("/library/people/obama/rename", data={"csrf_token": csrf_of(admin), "new_name": "barack"}),
                lambda ix: ix.names == ("barack",))
        reaches(lambda: admin.post("/library/people/barack/remove", data={"csrf_token": csrf_of(admin)}),
                lambda ix: len(ix) == 0)
        # a node's own enrolment (a Capture, or facemon-enrol --dashboard-url) goes in by the gallery API: audited too
        from recognizer.identity.gallery import Provenance

        vector = np.ones(128, np.float32) / np.sqrt(128)
        store.add("kit", vector[None, :], ["capture"], Provenance(by="desk-01/admin", station="desk-01", photo_sha256="ab" * 32))
        assert ("desk-01/admin", "enrol", "kit") in _audit(app)
    finally:
        store.stop()


def test_review_queue_groups_assigns_dismisses_and_keeps_negatives(admin, sqlite_app, sqlite_tokens, engine) -> None:  # noqa: F811
    from dashboard.library_enrol import gallery_index

    h = Tokens.header(sqlite_tokens.service)
    ob1, ob2, bi, alex = (face_of(engine, p) for p in (OBAMA, OBAMA2, BIDEN, ALEX))
    g1 = admin.post("/api/review/faces", json=face_body(*ob1), headers=h).json["group"]
    g2 = admin.post("/api/review/faces", json=face_body(*ob2, station_id="desk-02"), headers=h).json["group"]
    g3 = admin.post("/api/review/faces", json=face_body(*bi, verdict="unsure", candidate="alex"), headers=h).json["group"]
    assert g1 == g2 != g3, "the same stranger across two alerts is one group; another face is another"
    # bad posts: refused with the reason, nothing queued
    for bad, why in ((face_body(*ob1, verdict="maybe"), "verdict"), (face_body(b"\0" * 512, ob1[1]), "encoding"),
                     (face_body(ob1[0], b"not a jpeg"), "jpeg"), (face_body(*ob1, station_id="../x"), "station_id"),
                     (face_body(*ob1, alert_id="../.."), "alert_id")):
        r = admin.post("/api/review/faces", json=bad, headers=h)
        assert r.status_code == 400 and why in r.json["error"].lower(), (why, r.json)
    assert admin.post("/api/review/faces", json=face_body(*ob1, station_id="desk-02"),
                      headers=Tokens.header(sqlite_tokens.desk01)).status_code == 403
    page = admin.get("/library/review").get_data(as_text=True)
    assert f'id="group-{g1}"' in page and "2 faces at desk-01, desk-02" in page and f'id="not-{g3}-alex"' in page
    # "like it" on a queued face: search by likeness to that crop's own encoding (no photo to upload)
    with services(sqlite_app).sessions() as db:
        first = db.scalar(sa.select(sa.func.min(ReviewFace.id)))
    assert f'href="/library/search?face={first}"' in page
    like = admin.get(f"/library/search?face={first}").get_data(as_text=True)
    assert like.count('class="thumb"') == 2 and "desk-02" in like and "0.00" in like, "itself and the other obama"
    assert admin.get("/library/search?face=999999").status_code == 404
    assert admin.get("/library/search?face=x").status_code == 404

    # "this is obama": both faces of the group enrolled through the Enroller
    assert admin.post(f"/library/review/{g1}/assign", data={"csrf_token": csrf_of(admin), "person": "obama"}).status_code == 302
    # "not alex" needs alex enrolled; then Biden's face is kept as a negative of alex
    assert admin.post(f"/library/review/{g3}/not", data={"csrf_token": csrf_of(admin), "person": "alex"}).status_code == 404
    upload(admin, "/library/people", ALEX, name="alex")
    assert admin.post(f"/library/review/{g3}/not", data={"csrf_token": csrf_of(admin), "person": "alex"}).status_code == 302
    with services(sqlite_app).sessions() as db:
        index = gallery_index(db)
        states = dict(db.execute(sa.select(ReviewFace.group_id, ReviewFace.state)).all())
    assert sorted(index.names) == ["alex", "obama", "obama"] and index.negative_names == ("alex",)
    assert states == {g1: "assigned", g3: "not"}
    assert "Nothing to review" in admin.get("/library/review").get_data(as_text=True)
    # a face that fails the quality gate is refused with the reason and stays queued; "a stranger" dismisses it
    tiny = face_body(ob1[0], _tiny(ob1[1]), track=9)
    g4 = admin.post("/api/review/faces", json=tiny, headers=h).json["group"]
    r = admin.post(f"/library/review/{g4}/assign", data={"csrf_token": csrf_of(admin), "person": "obama"})
    assert "smaller than" in admin.get(r.location).get_data(as_text=True)
    assert admin.post(f"/library/review/{g4}/stranger", data={"csrf_token": csrf_of(admin)}).status_code == 302
    assert admin.post(f"/library/review/{g4}/stranger", data={"csrf_token": csrf_of(admin)}).status_code == 404
    actions = [a[1] for a in _audit(sqlite_app)]
    assert actions.count("assign") == 2 and actions.count("not_person") == 1 and actions.count("dismiss") == 1
    # search: by person (the faces assigned) and by likeness to a photo
    assert admin.get("/library/search?person=obama").get_data(as_text=True).count("assigned obama by admin") == 2
    r = upload(admin, "/library/search", OBAMA2)
    page = r.get_data(as_text=True)
    assert r.status_code == 200 and page.count("assigned obama") >= 1 and 'href="/library/people/obama"' in page


def _tiny(crop: bytes) -> bytes:
    import cv2

    from shared.jpeg import encode_jpeg

    img = cv2.imdecode(np.frombuffer(crop, np.uint8), cv2.IMREAD_COLOR)
    return encode_jpeg(cv2.resize(img, (48, 48)), 90)


def test_an_upload_refused_as_a_lookalike_comes_back_with_the_confirm_box(admin, sqlite_app) -> None:
    alex2 = ALEX.parent / "ageitgey_alex-lacamoire.png"
    assert upload(admin, "/library/people", ALEX, name="alex").status_code == 302
    r = upload(admin, "/library/people", alex2, name="lin")
    assert r.status_code == 302 and "like=alex" in r.location and "name=lin" in r.location
    page = admin.get(r.location).get_data(as_text=True)
    assert "Refused: looks like alex" in page and 'id="confirm-like"' in page and 'value="lin"' in page
    assert 'id="confirm-like"' not in admin.get("/library/people").get_data(as_text=True)
    assert 'id="confirm-like"' not in admin.get("/library/people?like=..%2F").get_data(as_text=True)
    # the same on a person's page; the deliberate confirmation of exactly that lookalike enrols it, audited as such
    assert upload(admin, "/library/people", OBAMA, name="kit").status_code == 302
    r = upload(admin, "/library/people/kit/photos", alex2)
    assert r.location.endswith("/library/people/kit?like=alex")
    assert upload(admin, "/library/people/kit/photos", alex2, confirm_lookalike="obama").location == r.location, \
        "a confirmation of someone else does not carry over"
    r = upload(admin, "/library/people/kit/photos", alex2, confirm_lookalike="alex")
    assert r.location.endswith("/library/people/kit") and "Added" in admin.get(r.location).get_data(as_text=True)
    assert any(a[1:] == ("add_photo", "kit") for a in _audit(sqlite_app))
    with services(sqlite_app).sessions() as db:
        detail = db.scalars(sa.select(AuditEntry.detail).where(AuditEntry.subject == "kit", AuditEntry.action == "add_photo").order_by(AuditEntry.id.desc())).first()
    assert "lookalike of alex confirmed" in detail
