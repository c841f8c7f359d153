"""An unknown face at a desk reaches the review queue with its alert: the recognizer's pipeline keeps the encoding
and a crop of an unknown track, the unknown_face event carries them in its details, the dashboard queues them
(and keeps them out of the alert row). Real photo, real pipeline, real SQLite file."""
from __future__ import annotations

import io
import json

import cv2
import numpy as np
import sqlalchemy as sa

from dashboard import review_queue
from dashboard.library_models import ReviewFace
from dashboard.models import Alert
from dashboard.services import services
from recognizer.alerting.rules import AlertEngine, AlertThresholds
from recognizer.identity.index import IndexStore
from recognizer.station.pipeline import PipelineConfig, StationPipeline
from shared.alert_wire import encode_event
from tests.dashboard.conftest import Tokens
from tests.library.conftest import FIXTURES


def test_an_unknown_face_s_alert_queues_its_crop_and_encoding(engine, tmp_path, sqlite_app, sqlite_tokens) -> None:  # noqa: F811
    photo = cv2.imread(str(FIXTURES / "stranger_kit.jpg"))
    rng = np.random.default_rng(3)
    pipeline = StationPipeline(engine, engine, IndexStore(tmp_path / "index"), PipelineConfig(liveness=False))
    alerts = AlertEngine("desk-01", AlertThresholds(unknown_after_s=0.5))
    events = []
    for i in range(12):
        noisy = np.clip(photo.astype(np.int16) + rng.normal(0, 2, photo.shape).round().astype(np.int16), 0, 255)
        jpeg = cv2.imencode(".jpg", noisy.astype(np.uint8))[1].tobytes()
        out = pipeline.process(jpeg)
        events += alerts.observe(1.8e9 + i * 0.2, out.faces, "alice", evidence=out.annotated)
    opened = next(e for e in events if e.type == "unknown_face" and e.state == "open")
    face = opened.details["face"]
    assert face["verdict"] == "unknown" and len(face["vector"]) > 600 and face["crop"]

    client = sqlite_app.test_client()
    r = client.post("/api/alerts", headers=Tokens.header(sqlite_tokens.desk01), content_type="multipart/form-data",
                    data={"meta": json.dumps(encode_event(opened)), "image": (io.BytesIO(opened.image), "e.jpg", "image/jpeg")})
    assert r.status_code == 201, r.json
    with services(sqlite_app).sessions() as db:
        queued = db.scalars(sa.select(ReviewFace)).all()
        details = json.loads(db.scalar(sa.select(Alert.details)))
        crop = review_queue.crop_of(db, queued[0].id) if queued else None
    assert len(queued) == 1 and queued[0].alert_id == opened.alert_id and queued[0].station_id == "desk-01"
    assert crop[:3] == b"\xff\xd8\xff" and "face" not in details and details["faces"] == 1
    # a malformed face costs the alert nothing: it is stored, the face is not queued
    bad = encode_event(opened)
    bad.update(event_id="f" * 32, alert_id="e" * 32, details={**opened.details, "face": {"vector": "!!"}})
    r = client.post("/api/alerts", headers=Tokens.header(sqlite_tokens.desk01), content_type="multipart/form-data",
                    data={"meta": json.dumps(bad), "image": (io.BytesIO(opened.image), "e.jpg", "image/jpeg")})
    assert r.status_code == 201
    with services(sqlite_app).sessions() as db:
        assert db.scalar(sa.select(sa.func.count()).select_from(ReviewFace)) == 1
