"""The recognizer's files at rest: the face index (or gallery copy), captured photos and the outbox are sealed with the
data key; plain files a keyless run left are sealed at the next start with a key (the migration); start refuses a
missing, wrong or world-readable key with a sentence naming the setting; rotation re-seals them all."""
from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from recognizer.alerting.outbox import Outbox, OutboxConfig
from recognizer.data_key import RecognizerFiles, prepare, rotate
from recognizer.identity.enrol import read_photo
from recognizer.identity.index import FaceIndex, load_index, save_index
from shared.alert_wire import AlertEvent
from shared.crypto import DataKeyError, KeyRing, load_ring, new_key, write_ring
from tests.procs import REPO

FIXTURES = REPO / "tests" / "fixtures"
JFIF = b"\xff\xd8\xff\xe0\x00\x10JFIF"


class Collect:
    name = "collect"

    def __init__(self) -> None:
        self.got: list[tuple[bytes, bytes | None]] = []

    def deliver(self, meta: bytes, image: bytes | None, best_image: bytes | None) -> None:
        self.got.append((bytes(meta), image))


def _ring(path: Path) -> KeyRing:
    write_ring(path, KeyRing((new_key(),)))
    return load_ring(str(path))


def _index(seed: int = 3) -> FaceIndex:
    vecs = np.random.default_rng(seed).normal(size=(3, 128)).astype(np.float32)
    return FaceIndex.empty().add("erin", vecs[:2], ["a.jpg", "b.jpg"]).add("finn", vecs[2:], ["c.jpg"])


def _readable(blob: bytes, index: FaceIndex, photo: bytes) -> list[str]:
    found = []
    if JFIF in blob or photo[len(photo) // 2: len(photo) // 2 + 32] in blob:
        found.append("jpeg")
    if b"/9j/" in blob:
        found.append("base64 jpeg")
    raw = index.encodings.astype("<f4").tobytes()
    if any(raw[k:k + 16] in blob for k in range(0, len(raw) - 16, 4)):
        found.append("encoding")
    return found


def _event(image: bytes, i: int = 0) -> AlertEvent:
    crop = __import__("base64").b64encode(image).decode()
    return AlertEvent(f"ev{i}", f"al{i}", "desk-01", "erin", "unknown_face", "open", 1.8e9, None,
                      {"face": {"crop": crop, "vector": "AAAA"}}, image=image)


def _fill_plain(root: Path, photo: bytes) -> RecognizerFiles:
    """What a keyless run leaves: a plain index, a captured photo, an outbox with a pending event and open incident."""
    files = RecognizerFiles(root / "encodings", root / "known_faces", root / "var" / "outbox.sqlite3")
    save_index(_index(), files.index_dir)
    (files.known_faces / "erin").mkdir(parents=True)
    (files.known_faces / "erin" / "capture-1.jpg").write_bytes(photo)
    box = Outbox(OutboxConfig(path=files.outbox), [Collect()])  # never started: the event stays pending
    box.put(_event(photo))
    box.stop()
    return files


def _all_bytes(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file())


def test_index_sealed_with_a_key_opens_only_with_it(tmp_path: Path) -> None:
    ring, index = _ring(tmp_path / "k"), _index()
    save_index(index, tmp_path / "plain")
    save_index(index, tmp_path / "sealed", ring)
    photo = (FIXTURES / "obama_probe.jpg").read_bytes()
    assert "encoding" in _readable(_all_bytes(tmp_path / "plain"), index, photo)  # the baseline: readable
    assert _readable(_all_bytes(tmp_path / "sealed"), index, photo) == []
    manifest = json.loads((tmp_path / "sealed" / "index.json").read_text())
    assert "people" not in manifest and manifest["people_count"] == 2 and manifest["sealed_with"] == ring.ids()[0]
    assert np.array_equal(load_index(tmp_path / "sealed", ring=ring).encodings, index.encodings)
    with pytest.raises(DataKeyError, match="no data key is configured.*FACEMON_RECOGNIZER_DATA_KEY_FILE"):
        load_index(tmp_path / "sealed")
    with pytest.raises(DataKeyError, match="not in the key ring"):
        load_index(tmp_path / "sealed", ring=_ring(tmp_path / "other"))


def test_outbox_seals_payload_evidence_and_incidents_and_delivers_them_plain(tmp_path: Path) -> None:
    ring, photo = _ring(tmp_path / "k"), (FIXTURES / "obama_probe.jpg").read_bytes()
    sink = Collect()
    box = Outbox(OutboxConfig(path=tmp_path / "o.sqlite3"), [sink], ring=ring)
    box.put(_event(photo))
    on_disk = _all_bytes(tmp_path)
    assert JFIF not in on_disk and b"/9j/" not in on_disk and b"obama" not in on_disk
    box.start()
    assert box.flush(10)
    box.stop()
    meta, image = sink.got[0]
    assert image == photo and json.loads(meta)["details"]["face"]["crop"]
    with pytest.raises(DataKeyError, match="no data key"):
        Outbox(OutboxConfig(path=tmp_path / "o.sqlite3"), [sink])  # delivered rows keep their sealed meta


def test_first_start_with_a_key_seals_what_a_keyless_run_left(tmp_path: Path) -> None:
    photo = (FIXTURES / "obama_probe.jpg").read_bytes()
    files = _fill_plain(tmp_path / "run", photo)
    assert set(_readable(_all_bytes(tmp_path / "run"), _index(), photo)) >= {"jpeg", "base64 jpeg", "encoding"}
    ring = _ring(tmp_path / "k")
    prepare(ring, files)
    assert _readable(_all_bytes(tmp_path / "run"), _index(), photo) == []
    assert read_photo(files.known_faces / "erin" / "capture-1.jpg", ring) == photo
    sink = Collect()
    box = Outbox(OutboxConfig(path=files.outbox), [sink], ring=ring)
    box.start()
    assert box.flush(10)
    box.stop()
    assert sink.got[0][1] == photo  # the event a keyless run left is delivered intact
    prepare(ring, files)  # a second start: nothing plain, nothing to do, no error
    with pytest.raises(DataKeyError, match="no data key is configured"):
        prepare(None, files)
    with pytest.raises(DataKeyError, match="not in the key ring"):
        prepare(_ring(tmp_path / "other"), files)


def test_rotation_reseals_every_file_and_the_old_key_opens_nothing(tmp_path: Path) -> None:
    photo = (FIXTURES / "obama_probe.jpg").read_bytes()
    files = _fill_plain(tmp_path / "run", photo)
    key = tmp_path / "data.key"
    old = _ring(key)
    prepare(old, files)
    kid, counts = rotate(key, files)
    assert counts == {"index": 1, "photos": 1, "outbox values": 3}, counts  # payload, image, incident details
    new = load_ring(str(key))
    assert new.ids() == [kid] and oct(key.stat().st_mode & 0o777) == "0o600"
    prepare(new, files)
    with pytest.raises(DataKeyError):
        prepare(old, files)
    assert np.array_equal(load_index(files.index_dir, ring=new).encodings, _index().encodings)


def _recognizer(args: list[str], env_key: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACEMON_")}
    if env_key:
        env["FACEMON_RECOGNIZER_DATA_KEY_FILE"] = env_key
    return subprocess.run([sys.executable, "-m", "recognizer", "--host", "127.0.0.1", "--port", "0", *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def test_recognizer_refuses_to_start_with_a_missing_wrong_or_open_key(tmp_path: Path) -> None:
    key = tmp_path / "data.key"
    made = subprocess.run([sys.executable, "-m", "recognizer", "data-key", "new", "--out", str(key)], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert made.returncode == 0 and oct(key.stat().st_mode & 0o777) == "0o600", made.stderr
    save_index(_index(), tmp_path / "enc", load_ring(str(key)))
    args = ["--index", str(tmp_path / "enc"), "--known-faces", str(tmp_path / "kf")]
    missing = _recognizer(args)
    assert missing.returncode == 1 and "is encrypted and no data key is configured" in missing.stderr, missing.stderr
    assert "--data-key-file" in missing.stderr
    other = tmp_path / "other.key"
    _ring(other)
    wrong = _recognizer([*args, "--data-key-file", str(other)])
    assert wrong.returncode == 1 and "not in the key ring" in wrong.stderr, wrong.stderr
    os.chmod(key, 0o644)
    loose = _recognizer(args, env_key=str(key))
    assert loose.returncode == 1 and "chmod 600" in loose.stderr, loose.stderr
