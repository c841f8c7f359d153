"""The review queue's per-desk limit under faces posted at once: a desk (a leaked token, a recognizer gone wrong)
cannot fill the dashboard's disk with queued crops; exactly the limit is stored however many arrive together, the
rest are refused with the reason, another desk is not affected, and an alert whose face no longer fits is kept.
Real dashboard on a real socket (the production web server), real SQLite file, real JPEG crops."""
from __future__ import annotations

import base64
import json
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import requests
import sqlalchemy as sa

from dashboard.library_models import ReviewCrop, ReviewFace
from dashboard.models import Alert
from dashboard.services import services
from tests.dashboard.conftest import LiveServer, Tokens, build_app
from tests.library.conftest import FIXTURES, face_body

LIMIT = 5


def _vector(seed: int) -> bytes:
    v = np.random.default_rng(seed).normal(size=128).astype("<f4")
    return (v / np.linalg.norm(v) * 0.6).astype("<f4").tobytes()  # a face encoding's norm (~0.6)


def test_faces_posted_at_once_stop_at_the_desk_s_limit_and_harm_nothing_else(tmp_path) -> None:
    app = build_app(f"sqlite:///{tmp_path / 'dashboard.sqlite3'}", review_max_queued_per_station=LIMIT)
    tokens = Tokens(app)
    server = LiveServer(app)
    crop = cv2.imencode(".jpg", cv2.resize(cv2.imread(str(FIXTURES / "stranger_kit.jpg")), (96, 96)))[1].tobytes()
    url, h = f"{server.url}/api/review/faces", Tokens.header(tokens.desk01)
    try:
        def post(i: int) -> requests.Response:
            return requests.post(url, json=face_body(_vector(i), crop), headers=h, timeout=60)

        with ThreadPoolExecutor(40) as pool:
            replies = list(pool.map(post, range(40)))
        codes = Counter(r.status_code for r in replies)
        assert codes == {201: LIMIT, 429: 40 - LIMIT}, codes
        refused = next(r for r in replies if r.status_code == 429)
        assert "desk-01" in refused.text and "review_max_queued_per_station" in refused.text, refused.text

        # another desk still queues its face
        other = requests.post(url, json=face_body(_vector(99), crop, station_id="desk-02"),
                              headers=Tokens.header(tokens.desk02), timeout=60)
        assert other.status_code == 201, other.text

        # an unknown face's alert from the full desk is stored; only its face stays out of the queue
        alert_id = uuid.uuid4().hex
        meta = {"event_id": uuid.uuid4().hex, "alert_id": alert_id, "station_id": "desk-01", "login_name": "alice",
                "type": "unknown_face", "state": "open", "started_at": "2026-12-03T08:00:00+00:00", "ended_at": None,
                "details": {"faces": 1, "face": {"track": 3, "verdict": "unknown",
                                                 "vector": base64.b64encode(_vector(7)).decode(),
                                                 "crop": base64.b64encode(crop).decode()}}}
        r = requests.post(f"{server.url}/api/alerts", headers=h, timeout=60,
                          files={"meta": (None, json.dumps(meta)), "image": ("e.jpg", crop, "image/jpeg")})
        assert r.status_code == 201, r.text
    finally:
        server.stop()
    with services(app).sessions() as db:
        per_desk = dict(db.execute(sa.select(ReviewFace.station_id, sa.func.count()).group_by(ReviewFace.station_id)).all())
        crops = db.scalar(sa.select(sa.func.count()).select_from(ReviewCrop))
        assert db.scalar(sa.select(Alert.alert_id).where(Alert.alert_id == alert_id)) == alert_id
    assert per_desk == {"desk-01": LIMIT, "desk-02": 1} and crops == LIMIT + 1, (per_desk, crops)
    services(app).engine.dispose()
