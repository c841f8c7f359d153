"""Encryption at rest with a key outside the database: a stolen copy of the dashboard's database holds no JPEG,
PNG or float32 encoding readable without the key (the same flow without a key shows them: the baseline); the
dashboard refuses to start with the key missing, another key, or a key file others can read; rotation re-seals
everything with a new key and the old one no longer opens anything."""
from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dashboard.services import services
from shared.crypto import DataKeyError
from tests.dashboard.conftest import REPO, Tokens, build_app, login, make_jpeg, meta, multipart

FIXTURES = REPO / "tests" / "fixtures"


def _key_file(path: Path) -> Path:
    done = subprocess.run([sys.executable, "-m", "dashboard", "data-key", "new", "--out", str(path)], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    return path


def _fill(app, vec: np.ndarray, photo: bytes, evidence: bytes) -> str:  # noqa: ANN001
    """What a running system stores: an alert with evidence, an enrolled encoding with its photo, a review face."""
    from dashboard.library_models import ReviewCrop, ReviewFace
    from dashboard.models import utcnow
    from recognizer.identity.index import MODEL_ID

    tokens = Tokens(app)
    client = app.test_client()
    m = meta()
    assert client.post("/api/alerts", data=multipart(m, evidence), headers=Tokens.header(tokens.desk01)).status_code in (200, 201)
    body = {"person": "erin", "vector": base64.b64encode(vec.astype("<f4").tobytes()).decode(), "model": MODEL_ID,
            "source": "erin.jpg", "photo_sha256": hashlib.sha256(photo).hexdigest(), "enrolled_by": "registrar",
            "photo": base64.b64encode(photo).decode()}
    assert client.post("/api/gallery/encodings", json=body, headers=Tokens.header(tokens.service)).status_code == 201
    with services(app).writer() as db:
        face = ReviewFace(alert_id=m["alert_id"], station_id="desk-01", track=1, verdict="unknown",
                          vector=(vec[::-1]).astype("<f4").tobytes(), seen_at=utcnow(), group_id=1, state="queued")
        db.add(face)
        db.flush()
        db.add(ReviewCrop(face_id=face.id, data=evidence))
        db.commit()
    return m["alert_id"]


def _readable(copy: bytes, vec: np.ndarray, jpegs: list[bytes]) -> list[str]:
    found = []
    for i, j in enumerate(jpegs):
        if j[:16] in copy or j[len(j) // 2: len(j) // 2 + 32] in copy:
            found.append(f"jpeg {i}")
    if b"JFIF" in copy or b"\x89PNG\r\n\x1a\n" in copy:
        found.append("an image marker")
    for name, v in (("encoding", vec), ("review encoding", vec[::-1])):
        raw = v.astype("<f4").tobytes()
        if any(raw[k:k + 16] in copy for k in range(0, len(raw) - 16, 4)):
            found.append(name)
    return found


def _copy_of(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())


@pytest.mark.parametrize("keyed", [False, True], ids=["no-key-baseline", "keyed"])
def test_a_stolen_copy_holds_nothing_readable(tmp_path: Path, keyed: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "data"
    cfg = {}
    if keyed:
        cfg["data_key_file"] = str(_key_file(tmp_path / "keys" / "data.key"))
    app = build_app(f"sqlite:///{data / 'dashboard.sqlite3'}", **cfg)
    vec = np.random.default_rng(7).normal(size=128).astype(np.float32)
    vec /= np.linalg.norm(vec)
    photo, evidence = (FIXTURES / "obama_probe.jpg").read_bytes(), make_jpeg(text="evidence frame")
    try:
        alert_id = _fill(app, vec, photo, evidence)
        client = app.test_client()
        login(client, "viewer")
        assert client.get(f"/api/alerts/{alert_id}/image").data == evidence  # the system itself reads it
        stolen = tmp_path / "stolen"
        shutil.copytree(data, stolen)  # database, WAL and all, as they are on disk while it runs
    finally:
        services(app).broker.close()
        services(app).engine.dispose()
    found = _readable(_copy_of(stolen), vec, [photo, evidence])
    if keyed:
        assert found == [], found
    else:
        assert {"jpeg 0", "jpeg 1", "encoding", "review encoding"} <= set(found), found


def _cli(db_url: str, key_file: str | None, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACEMON_")}
    if key_file:
        env["FACEMON_DASHBOARD_DATA_KEY_FILE"] = key_file
    return subprocess.run([sys.executable, "-m", "dashboard", "--db", db_url, *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)


def test_start_refuses_a_missing_wrong_or_open_key_and_rotation_reseals(tmp_path: Path) -> None:
    key = _key_file(tmp_path / "data.key")
    url = f"sqlite:///{tmp_path / 'd.sqlite3'}"
    app = build_app(url, data_key_file=str(key))
    evidence = make_jpeg(text="rotate me")
    try:
        vec = np.ones(128, np.float32) / np.sqrt(128)
        alert_id = _fill(app, vec, (FIXTURES / "obama_probe.jpg").read_bytes(), evidence)
    finally:
        services(app).broker.close()
        services(app).engine.dispose()
    assert _cli(url, str(key), "enrolments").returncode == 0
    missing = _cli(url, None, "enrolments")
    assert missing.returncode == 1 and "holds encrypted data but no data key" in missing.stderr, missing.stderr
    other = _key_file(tmp_path / "other.key")
    wrong = _cli(url, str(other), "enrolments")
    assert wrong.returncode == 1 and "does not open this database" in wrong.stderr, wrong.stderr
    os.chmod(key, 0o644)
    loose = _cli(url, str(key), "enrolments")
    assert loose.returncode == 1 and "readable by other users" in loose.stderr and "chmod 600" in loose.stderr
    os.chmod(key, 0o600)
    with pytest.raises(DataKeyError):
        build_app(url)  # the server itself refuses too
    old = key.read_bytes()
    rotated = _cli(url, str(key), "data-key", "rotate")
    assert rotated.returncode == 0 and "re-sealed 2 evidence, 1 gallery_encodings, 1 review_faces, 1 review_crops" in rotated.stdout, rotated.stderr + rotated.stdout
    assert key.read_bytes() != old and oct(key.stat().st_mode & 0o777) == "0o600"
    stale = tmp_path / "old.key"
    stale.write_bytes(old)
    os.chmod(stale, 0o600)
    assert _cli(url, str(stale), "enrolments").returncode == 1  # the old key opens nothing now
    app = build_app(url, data_key_file=str(key))
    try:
        client = app.test_client()
        login(client, "viewer")
        assert client.get(f"/api/alerts/{alert_id}/image").data == evidence
    finally:
        services(app).broker.close()
        services(app).engine.dispose()
