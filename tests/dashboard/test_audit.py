"""The audit of every look: views of evidence, CSV exports and alert lists are recorded with who, when, what and
from where; the chain of hashes shows an edit or a deletion (the page, /api/audit/verify and the CLI name the first
broken link); concurrent looks chain without a gap on every backend; retention trims without breaking it."""
from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import sqlalchemy as sa

from dashboard import audit
from dashboard.audit_models import AuditEntry
from dashboard.services import services
from tests.dashboard.conftest import REPO, Tokens, login, meta, multipart


def _post_alert(client, tokens: Tokens, jpeg: bytes) -> str:  # noqa: ANN001
    m = meta()
    resp = client.post("/api/alerts", data=multipart(m, jpeg), headers=Tokens.header(tokens.desk01))
    assert resp.status_code in (200, 201), resp.get_data(as_text=True)
    return m["alert_id"]


def test_looks_are_recorded_and_a_deletion_is_named(app, tokens: Tokens, jpeg: bytes) -> None:  # noqa: ANN001
    client = app.test_client()
    alert_id = _post_alert(client, tokens, jpeg)
    login(client, "viewer")
    assert client.get(f"/api/alerts/{alert_id}/image").status_code == 200
    assert client.get("/api/alerts.csv?type=unknown_face").status_code == 200
    assert client.get("/api/alerts").status_code == 200
    with services(app).sessions() as db:
        rows = [(e.actor, e.action, e.subject, e.detail, e.address) for e in reversed(audit.entries(db))]
        assert audit.verify(db).ok
    assert rows == [("viewer", "evidence.view", f"alert {alert_id}", "image", "127.0.0.1"),
                    ("viewer", "alerts.csv", "alerts", "type=unknown_face", "127.0.0.1"),
                    ("viewer", "alerts.list", "1 alerts", "all", "127.0.0.1")]
    # a viewer may not read the audit; an admin may, and sees it intact
    assert client.get("/api/audit/verify").status_code == 403
    admin = app.test_client()
    login(admin, "admin")
    assert admin.get("/api/audit/verify").get_json() == {"ok": True, "checked": 3, "broken_at": None, "reason": ""}
    # someone removes the record of the CSV export by hand: the next entry's link no longer matches
    with services(app).writer() as db:
        db.execute(sa.delete(AuditEntry).where(AuditEntry.id == 2))
        db.commit()
    resp = admin.get("/api/audit/verify")
    assert resp.status_code == 409 and resp.get_json()["broken_at"] == 2, resp.get_json()
    page = admin.get("/admin/audit").get_data(as_text=True)
    assert "Chain broken at entry 2" in page and "evidence.view" in page


def test_an_edit_and_a_removed_newest_entry_are_found(sqlite_app) -> None:  # noqa: ANN001
    factory = services(sqlite_app).writer
    for i in range(5):
        audit.record_now(factory, "admin", "person.view", f"p{i}", "", "10.0.0.1")
    with factory() as db:
        assert audit.verify(db).as_dict() == {"ok": True, "checked": 5, "broken_at": None, "reason": ""}
        db.execute(sa.update(AuditEntry).where(AuditEntry.id == 3).values(subject="someone-else"))
        db.commit()
        report = audit.verify(db)
        assert (report.ok, report.broken_at, report.checked) == (False, 3, 2) and "contents" in report.reason
        db.execute(sa.update(AuditEntry).where(AuditEntry.id == 3).values(subject="p2"))
        db.execute(sa.delete(AuditEntry).where(AuditEntry.id == 5))
        db.commit()
        report = audit.verify(db)
        assert (report.ok, report.broken_at) == (False, 5), report


def test_looks_at_once_chain_without_a_gap(app) -> None:  # noqa: ANN001
    factory = services(app).writer
    n, errors = 16, []
    barrier = threading.Barrier(n)

    def look(i: int) -> None:
        try:
            barrier.wait()
            audit.record_now(factory, f"user{i}", "evidence.view", f"alert {i}", "image", "127.0.0.1")
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=look, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with services(app).sessions() as db:
        assert [e.id for e in reversed(audit.entries(db))] == list(range(1, n + 1))
        assert audit.verify(db).ok and audit.verify(db).checked == n


def test_retention_trims_the_oldest_and_the_chain_still_verifies(sqlite_app) -> None:  # noqa: ANN001
    import datetime as dt

    factory = services(sqlite_app).writer
    old = dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc)
    with factory() as db:
        for i in range(3):
            audit.record(db, "admin", "person.view", f"p{i}", "", "", at=old)
        db.commit()
    for i in range(2):
        audit.record_now(factory, "admin", "person.view", f"new{i}")
    with factory() as db:
        assert audit.trim_before(db, dt.datetime(2021, 1, 1, tzinfo=dt.timezone.utc)) == 3
        db.commit()
        report = audit.verify(db)
        assert report.ok and report.checked == 2, report
        db.execute(sa.delete(AuditEntry).where(AuditEntry.id == 4))  # the first kept one, removed by hand
        db.commit()
        assert audit.verify(db).broken_at == 4


def test_cli_verify_and_export(tmp_path: Path) -> None:
    db = tmp_path / "d.sqlite3"
    url = f"sqlite:///{db}"
    from dashboard import db as dbmod

    engine = dbmod.make_engine(url)
    dbmod.upgrade(engine)
    factory = dbmod.make_session_factory(engine, write=True)
    for i in range(3):
        audit.record_now(factory, "admin", "alerts.csv", "alerts", f"q{i}", "127.0.0.1")

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "dashboard", "--db", url, "audit", *args], cwd=REPO,
                              capture_output=True, text=True, timeout=60)

    ok = cli("verify")
    assert ok.returncode == 0 and "3 entries checked" in ok.stdout, ok.stderr
    out = tmp_path / "audit.csv"
    assert cli("export", "--out", str(out)).returncode == 0
    lines = out.read_text().splitlines()
    assert lines[0].startswith("id,at,actor,action,subject") and len(lines) == 4
    with factory() as s:
        s.execute(sa.delete(AuditEntry).where(AuditEntry.id == 2))
        s.commit()
    engine.dispose()
    bad = cli("verify")
    assert bad.returncode == 1 and "BROKEN at entry 2" in bad.stderr, bad.stderr
