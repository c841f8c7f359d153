"""Fixtures of the face library tests: the dashboard on a real socket and SQLite file, an admin, real face photos."""
from __future__ import annotations

import base64
import uuid
from pathlib import Path

import numpy as np
import pytest

from tests.dashboard.conftest import REPO, csrf_of, login  # noqa: F401 - fixtures re-exported below
from tests.dashboard.conftest import live_server, sqlite_app, sqlite_tokens  # noqa: F401

OBAMA = REPO / "known_faces" / "barack_obama" / "ageitgey_obama.jpg"
OBAMA2 = REPO / "known_faces" / "barack_obama" / "ageitgey_obama2.jpg"
BIDEN = REPO / "known_faces" / "joe_biden" / "ageitgey_biden.jpg"
ALEX = REPO / "known_faces" / "alex_lacamoire" / "ageitgey_alex_lacamoire1.jpg"
FIXTURES = REPO / "tests" / "fixtures"


def face_of(engine, path: Path) -> tuple[bytes, bytes]:  # noqa: ANN001
    """(encoding bytes, JPEG crop) of the one face in `path`, as a recognizer would send them."""
    from recognizer.identity.enrol import FOLDER_RULES, face_crop_jpeg, face_encoding_for_enrolment
    from recognizer.vision.imageio import decode_image

    bgr = decode_image(path.read_bytes())
    enc, det = face_encoding_for_enrolment(engine, bgr, FOLDER_RULES)
    return np.asarray(enc, "<f4").tobytes(), face_crop_jpeg(bgr, det.box)


def face_body(vector: bytes, crop: bytes, **over: object) -> dict:
    body = {"alert_id": uuid.uuid4().hex, "station_id": "desk-01", "track": 1, "verdict": "unknown",
            "vector": base64.b64encode(vector).decode(), "crop": base64.b64encode(crop).decode()}
    body.update(over)
    return body


def upload(client, url: str, path: Path, **form: str):  # noqa: ANN001, ANN201
    import io

    data = {"csrf_token": csrf_of(client), "photo": (io.BytesIO(path.read_bytes()), path.name, "image/jpeg"), **form}
    return client.post(url, data=data, content_type="multipart/form-data")


@pytest.fixture
def admin(sqlite_app):  # noqa: ANN001, F811
    client = sqlite_app.test_client()
    login(client, "admin")
    return client
