"""Consent and notice: each enrolment records the privacy notice version shown and who confirmed it (sent by the
enrolling program, or for a Capture under an admin's grant the dashboard's current notice, confirmed by that
admin); no emotion or attention output exists anywhere in the product."""
from __future__ import annotations

import base64
import hashlib
import re

import numpy as np
import sqlalchemy as sa

from dashboard.gallery_models import GalleryEncoding
from dashboard.services import services
from recognizer.identity.index import MODEL_ID
from tests.dashboard.conftest import REPO, Tokens, sqlite_app, sqlite_tokens  # noqa: F401 - fixtures


def _body(person: str, seed: int, **extra: object) -> dict:
    vec = np.random.default_rng(seed).normal(size=128).astype("<f4")
    vec /= np.linalg.norm(vec)
    return {"person": person, "vector": base64.b64encode(vec.tobytes()).decode(), "model": MODEL_ID,
            "source": f"{person}.jpg", "photo_sha256": hashlib.sha256(bytes([seed])).hexdigest(),
            "enrolled_by": "registrar", **extra}


def test_enrolment_records_the_notice_and_who_confirmed_it(sqlite_app, sqlite_tokens: Tokens) -> None:  # noqa: ANN001
    client = sqlite_app.test_client()
    auth = Tokens.header(sqlite_tokens.service)
    assert client.post("/api/gallery/encodings", json=_body("ann", 1, grant_id=7), headers=auth).status_code == 201
    assert client.post("/api/gallery/encodings", headers=auth, json=_body(
        "bea", 2, notice_version="2026-09-v0", notice_confirmed_by="clerk")).status_code == 201
    assert client.post("/api/gallery/encodings", json=_body("cid", 3), headers=auth).status_code == 201
    assert client.post("/api/gallery/encodings", json=_body("dee", 4, notice_version=5), headers=auth).status_code == 400
    with services(sqlite_app).sessions() as db:
        got = {e.person: (e.notice_version, e.notice_confirmed_by) for e in db.scalars(sa.select(GalleryEncoding))}
    assert got == {"ann": (services(sqlite_app).config.notice_version, "registrar"), "bea": ("2026-09-v0", "clerk"),
                   "cid": (None, None)}


def test_no_emotion_or_attention_output_anywhere() -> None:
    words = re.compile(r"\b(emotion|attention_score|attentive|engagement|mood|affect_score)\b", re.I)
    hits = []
    for folder in ("recognizer", "edge", "dashboard", "shared"):
        for path in (REPO / folder).rglob("*"):
            if path.suffix in (".py", ".html", ".js") and words.search(path.read_text(errors="replace")):
                hits.append(str(path.relative_to(REPO)))
    assert hits == [], hits


def test_a_photo_uploaded_on_the_people_page_records_the_notice_and_the_admin(sqlite_app) -> None:  # noqa: ANN001
    from tests.library.conftest import OBAMA, upload
    from tests.dashboard.conftest import login

    admin = sqlite_app.test_client()
    login(admin, "admin")
    page = admin.get("/library/people").get_data(as_text=True)
    version = services(sqlite_app).config.notice_version
    assert f"privacy notice {version}" in page  # the admin is told what the upload records
    assert upload(admin, "/library/people", OBAMA, name="obama").status_code == 302
    with services(sqlite_app).sessions() as db:
        got = [(e.person, e.notice_version, e.notice_confirmed_by) for e in db.scalars(sa.select(GalleryEncoding))]
    assert got == [("obama", version, "admin")], got


def test_this_is_from_the_review_queue_records_the_notice_and_the_admin(sqlite_app, sqlite_tokens, engine) -> None:  # noqa: ANN001, F811
    """"This is <person>" on a queued face enrols it: the current notice, confirmed by the admin who named it, as an
    upload on the People page records (baseline: that upload, in the same test)."""
    from tests.dashboard.conftest import csrf_of, login
    from tests.library.conftest import ALEX, OBAMA, face_body, face_of, upload

    admin = sqlite_app.test_client()
    login(admin, "admin")
    version = services(sqlite_app).config.notice_version
    assert upload(admin, "/library/people", ALEX, name="alex").status_code == 302
    group = admin.post("/api/review/faces", json=face_body(*face_of(engine, OBAMA)),
                       headers=Tokens.header(sqlite_tokens.service)).json["group"]
    page = admin.get("/library/review").get_data(as_text=True)
    assert f"privacy notice {version}" in page  # the admin is told what naming a face records
    assert admin.post(f"/library/review/{group}/assign",
                      data={"csrf_token": csrf_of(admin), "person": "obama"}).status_code == 302
    with services(sqlite_app).sessions() as db:
        got = {e.person: (e.notice_version, e.notice_confirmed_by, e.source.split(":")[0])
               for e in db.scalars(sa.select(GalleryEncoding))}
    assert got == {"alex": (version, "admin", "upload"), "obama": (version, "admin", "review")}, got
