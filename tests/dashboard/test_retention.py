"""Retention: each kind (evidence, alerts, review faces, sign-in failures, audit entries) is deleted when its
period is up, on every backend; on SQLite the deleted JPEG's bytes are gone from the file (secure_delete + VACUUM);
the running dashboard applies it by itself, on its schedule, and logs counts."""
from __future__ import annotations

import datetime as dt
import logging
import time
from pathlib import Path

import sqlalchemy as sa

from dashboard import audit, retention
from dashboard.library_models import ReviewCrop, ReviewFace
from dashboard.models import Alert, Evidence, SignInFailure, utcnow
from dashboard.services import services
from tests.dashboard.conftest import Tokens, build_app, make_jpeg, meta, multipart

UTC = dt.timezone.utc
NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
OLD = NOW - dt.timedelta(days=400)
RECENT = NOW - dt.timedelta(days=2)


def _post(app, tokens: Tokens, started: dt.datetime, jpeg: bytes) -> str:  # noqa: ANN001
    m = meta(started_at=started.isoformat())
    resp = app.test_client().post("/api/alerts", data=multipart(m, jpeg), headers=Tokens.header(tokens.desk01))
    assert resp.status_code in (200, 201), resp.get_data(as_text=True)
    return m["alert_id"]


def _face(alert_id: str, seen: dt.datetime, track: int) -> ReviewFace:
    return ReviewFace(alert_id=alert_id, station_id="desk-01", track=track, verdict="unknown", vector=b"\0" * 512,
                      seen_at=seen, group_id=track, state="queued")


def test_each_kind_goes_when_its_time_is_up(app, tokens: Tokens, jpeg: bytes) -> None:  # noqa: ANN001
    ancient = _post(app, tokens, OLD, jpeg)  # past every period: alert and evidence go
    month = _post(app, tokens, NOW - dt.timedelta(days=45), jpeg)  # evidence (30 d) goes, the alert (180 d) stays
    recent = _post(app, tokens, RECENT, jpeg)
    writer = services(app).writer
    with writer() as db:
        faces = [_face(ancient, OLD, 1), _face(recent, RECENT, 2)]
        db.add_all(faces)
        db.flush()
        db.add_all([ReviewCrop(face_id=f.id, data=b"\xff\xd8\xff" + b"x" * 100) for f in faces])
        db.add_all([SignInFailure(station_id="desk-01", username="u", reason="password", at=OLD),
                    SignInFailure(station_id="desk-01", username="u", reason="password", at=RECENT)])
        for i in range(3):
            audit.record(db, "admin", "person.view", f"p{i}", "", "", at=NOW - dt.timedelta(days=800))
        audit.record(db, "admin", "person.view", "kept", "", "", at=RECENT)
        db.commit()
    counts = retention.apply(writer, retention.RetentionPolicy(), now=NOW)
    assert counts == {"evidence": 4, "alert_events": 1, "alerts": 1, "review_faces": 1, "sign_in_failures": 1,
                      "audit": 3}, counts  # evidence: image + thumb of the two alerts older than 30 days
    with services(app).sessions() as db:
        assert set(db.scalars(sa.select(Alert.alert_id))) == {month, recent}
        assert set(db.scalars(sa.select(Evidence.alert_id))) == {recent}
        assert db.get(Alert, month).evidence_purged_at is not None
        assert [f.alert_id for f in db.scalars(sa.select(ReviewFace))] == [recent]
        assert db.scalar(sa.select(sa.func.count()).select_from(ReviewCrop)) == 1  # its crop went with it
        assert db.scalar(sa.select(sa.func.count()).select_from(SignInFailure)) == 1
        assert [e.subject for e in audit.entries(db)] == ["audit", "kept"]  # the trim itself is audited
        assert audit.verify(db).ok
    assert retention.apply(writer, retention.RetentionPolicy(), now=NOW) == {
        "evidence": 0, "alert_events": 0, "alerts": 0, "review_faces": 0, "sign_in_failures": 0, "audit": 0}
    assert retention.compact(services(app).engine) in ("VACUUM", "OPTIMIZE TABLE")


def _file_bytes(db: Path) -> bytes:
    return b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*"))


def test_deleted_evidence_is_gone_from_the_sqlite_file(tmp_path: Path) -> None:
    db = tmp_path / "dashboard.sqlite3"
    app = build_app(f"sqlite:///{db}")
    try:
        tokens = Tokens(app)
        photo = make_jpeg(text="retention-marker")
        marker = photo[len(photo) // 2: len(photo) // 2 + 64]
        _post(app, tokens, OLD, photo)
        assert marker in _file_bytes(db)  # the baseline: the bytes are there before
        counts = retention.apply(services(app).writer, retention.RetentionPolicy(), now=NOW)
        assert counts["evidence"] == 2
        with services(app).engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA secure_delete").scalar() == 1
        retention.compact(services(app).engine)
        assert marker not in _file_bytes(db)
    finally:
        services(app).broker.close()
        services(app).engine.dispose()


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_the_running_dashboard_applies_it_by_itself(tmp_path: Path) -> None:
    handler = _Lines()
    logger = logging.getLogger("dashboard.retention")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    app = build_app(f"sqlite:///{tmp_path / 'd.sqlite3'}", retention_interval_s=1)
    try:
        tokens = Tokens(app)
        alert_id = _post(app, tokens, utcnow() - dt.timedelta(days=40), make_jpeg())
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if any(line.startswith("retention removed") for line in handler.lines):  # logged after the deletes
                break
            time.sleep(0.2)
        with services(app).sessions() as db:
            assert db.scalar(sa.select(sa.func.count()).select_from(Evidence)) == 0
            assert db.get(Alert, alert_id) is not None  # the alert row is kept 180 days
        assert any(line.startswith("retention removed 2 evidence") for line in handler.lines), handler.lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        services(app).broker.close()
        services(app).engine.dispose()
