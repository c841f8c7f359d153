"""Erasure and access across a pool of two recognizer nodes (real processes, tests/pool harness): a person's
encoding is on both nodes, in memory and in each node's local copy on disk; `export-person` gives everything held
about them; removing them deletes their encodings, photo and review faces at the dashboard and both nodes drop
them from memory and disk within 2 s; both acts are audited. Run with and without a data key (FACEMON_DATA_KEY for
the dashboard and both nodes): with one, the nodes' copies on disk are sealed and erasure is as quick."""
from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from shared.fsmode import loose_entries
from tests.pool.cluster import FIXTURES, SERVICE_TOKEN, Pool, haproxy_missing, wait_until
from tests.procs import REPO

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300),
              pytest.mark.skipif(haproxy_missing() is not None, reason=haproxy_missing() or "")]


def _request(method: str, url: str, body: dict | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(url, method=method, data=json.dumps(body).encode() if body else None,
                                 headers={"Authorization": f"Bearer {SERVICE_TOKEN}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:  # noqa: S310 - loopback
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def _disk_people(node) -> set[str] | None:  # noqa: ANN001
    """The people in a node's local copy; None while it is missing or being rewritten (read again)."""
    from recognizer.identity.index import FaceIndexError, load_index

    from shared.crypto import load_ring

    try:
        return set(load_index(node.folder / "gallery", ring=load_ring(None)).names)
    except (FaceIndexError, OSError, ValueError):
        return None


def _gallery(node) -> dict:  # noqa: ANN001
    return node.health()[1].get("gallery") or {}


@pytest.mark.parametrize("keyed", [False, True], ids=["plain", "keyed"])
def test_export_and_erase_a_person_on_two_nodes(tmp_path: Path, keyed: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    from recognizer.identity.index import MODEL_ID
    from shared.crypto import is_sealed, load_ring, new_key

    monkeypatch.delenv("FACEMON_DATA_KEY", raising=False)
    if keyed:  # the dashboard, both nodes and the CLI below inherit it
        monkeypatch.setenv("FACEMON_DATA_KEY", base64.b64encode(new_key()).decode())

    pool = Pool(tmp_path / "pool", nodes_n=2)
    try:
        pool.start()
        photo = (FIXTURES / "obama_probe.jpg").read_bytes()
        vec = np.random.default_rng(21).normal(size=128).astype("<f4")
        vec /= np.linalg.norm(vec)
        code, body = _request("POST", f"{pool.dashboard_url}/api/gallery/encodings", {
            "person": "erin", "vector": base64.b64encode(vec.tobytes()).decode(), "model": MODEL_ID,
            "source": "erin-1.jpg", "photo_sha256": hashlib.sha256(photo).hexdigest(), "enrolled_by": "registrar",
            "photo": base64.b64encode(photo).decode()})
        assert code == 201, body
        from dashboard import db as dbmod
        from dashboard.library_models import ReviewCrop, ReviewFace
        from dashboard.models import utcnow

        engine = dbmod.make_engine(f"sqlite:///{pool.db_path}", load_ring(None))
        with dbmod.make_session_factory(engine, write=True)() as db:
            face = ReviewFace(alert_id="a" * 32, station_id="desk-01", track=1, verdict="unsure", candidate="erin",
                              vector=vec.tobytes(), seen_at=utcnow(), group_id=1, state="queued")
            db.add(face)
            db.flush()
            db.add(ReviewCrop(face_id=face.id, data=photo))
            db.commit()
        engine.dispose()
        wait_until("erin on both nodes, in memory and on disk", lambda: all(
            _gallery(n).get("encodings") == 1 and "erin" in (_disk_people(n) or ()) for n in pool.nodes), 30, 0.05)
        assert all(is_sealed((n.folder / "gallery" / "index.npz").read_bytes()) == keyed for n in pool.nodes)

        # access: everything held about her, audited
        out = tmp_path / "export"
        done = subprocess.run([sys.executable, "-m", "dashboard", "--db", f"sqlite:///{pool.db_path}", "export-person",
                               "erin", "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        held = json.loads((out / "person.json").read_text())
        assert len(held["encodings"]) == 1 and np.allclose(held["encodings"][0]["vector"], vec, atol=1e-6)
        assert (out / held["encodings"][0]["photo"]).read_bytes() == photo
        assert [f["candidate"] for f in held["review_faces"]] == ["erin"]
        assert loose_entries(out) == []

        # erasure: both nodes, memory and disk, timed from the request
        t0 = time.monotonic()
        code, body = _request("DELETE", f"{pool.dashboard_url}/api/gallery/people/erin")
        assert code == 200 and body["removed"] == 1, body
        took_memory = wait_until("erin gone from both nodes' memory", lambda: all(
            _gallery(n).get("seq", 0) >= body["seq"] and _gallery(n).get("encodings") == 0 for n in pool.nodes),
            10, 0.01)
        wait_until("erin gone from both nodes' disk copies", lambda: all(
            _disk_people(n) is not None and "erin" not in _disk_people(n) for n in pool.nodes), 10, 0.01)
        took_disk = time.monotonic() - t0
        print(f"erasure across 2 nodes ({'keyed' if keyed else 'plain'}): memory {took_memory:.3f} s, "
              f"disk {took_disk:.3f} s after the request")
        assert took_disk < 2.0, took_disk
        for node in pool.nodes:  # the old copy's bytes are not left in the folder either
            raw = b"".join(p.read_bytes() for p in (node.folder / "gallery").rglob("*") if p.is_file())
            assert vec.tobytes()[:64] not in raw
        assert pool.query("SELECT count(*) FROM gallery_encodings WHERE person = 'erin'") == [(0,)]
        assert pool.query("SELECT count(*) FROM review_faces") == [(0,)]
        assert pool.query("SELECT count(*) FROM review_crops") == [(0,)]  # crops go with their faces
        actions = pool.query("SELECT actor, action, subject FROM audit_log ORDER BY id")
        assert ("pool", "remove_person", "erin") in actions and any(
            a[1:] == ("person.export", "erin") for a in actions), actions
    except BaseException:
        print(pool.logs())
        raise
    finally:
        pool.stop()
