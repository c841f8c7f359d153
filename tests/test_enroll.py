"""Enrolment and the index: real photos in, .npz + manifest out; bad images skipped with reasons."""
from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest

from recognizer.enroll import Enroller, build_index, collect_known_faces, main as enroll_main
from recognizer.imageio import encode_jpeg
from recognizer.index import (
    FaceIndex, IndexCorrupt, IndexModelMismatch, IndexMissing, IndexStore, load_index, save_index,
)
from recognizer.match import vote
from tests.conftest import FIXTURES, KNOWN_FACES


def faceless_jpeg() -> bytes:
    """A real photo with the face cut away (the suit below it)."""
    img = cv2.imread(str(FIXTURES / "obama_probe.jpg"))
    return encode_jpeg(img[int(img.shape[0] * 0.75) :, :])


def test_index_roundtrip_and_manifest(tmp_path):
    idx = FaceIndex.empty().add("a", np.ones((2, 128), np.float32) * 0.1, ["x", "y"]).add("b", np.zeros((1, 128)), ["z"])
    save_index(idx, tmp_path)
    manifest = json.loads((tmp_path / "index.json").read_text())
    assert manifest["count"] == 3 and manifest["people"] == ["a", "b"] and manifest["model"]
    back = load_index(tmp_path)
    assert back.names == ("a", "a", "b") and np.allclose(back.encodings, idx.encodings)
    with np.load(tmp_path / "index.npz", allow_pickle=False) as npz:  # readable without pickle
        assert npz["names"].dtype.kind == "U"


def test_index_from_other_model_refused(tmp_path):
    save_index(FaceIndex.empty(), tmp_path)
    manifest = json.loads((tmp_path / "index.json").read_text())
    manifest["model"] = "some_other_model"
    (tmp_path / "index.json").write_text(json.dumps(manifest))
    with pytest.raises(IndexModelMismatch, match="rebuild"):
        load_index(tmp_path)


def test_index_missing_and_corrupt(tmp_path):
    with pytest.raises(IndexMissing):
        load_index(tmp_path)
    save_index(FaceIndex.empty().add("a", np.zeros((1, 128)), ["x"]), tmp_path)
    (tmp_path / "index.npz").write_bytes(b"not an npz")
    with pytest.raises(IndexCorrupt):
        load_index(tmp_path)


def test_store_reloads_when_files_change_and_survives_bad_files(tmp_path):
    store = IndexStore(tmp_path)
    assert len(store.index) == 0
    save_index(FaceIndex.empty().add("a", np.zeros((1, 128)), ["x"]), tmp_path)
    assert store.reload_if_changed() and store.index.people == ["a"]
    (tmp_path / "index.json").write_text("{broken")
    assert not store.reload_if_changed()
    assert store.index.people == ["a"]  # kept the good one


def test_build_index_from_shipped_faces(engine, tmp_path):
    root = tmp_path / "known"
    shutil.copytree(KNOWN_FACES, root)
    shutil.copy(FIXTURES / "biden_probe.jpg", root / "joe_biden" / "probe.jpg")
    shutil.copy(FIXTURES / "stranger_kit.jpg", root / "kit3.jpg")  # the seeds' flat naming
    (root / "joe_biden" / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    (root / "joe_biden" / "desk.jpg").write_bytes(faceless_jpeg())
    (root / "barack_obama" / "group.jpg").write_bytes((FIXTURES / "two_people.jpg").read_bytes())
    people, _ = collect_known_faces(root)
    assert "kit" in people
    index, skipped = build_index(engine, root)
    reasons = {p.name: r for p, r in skipped}
    assert "no face" in reasons["desk.jpg"]
    assert "2 faces" in reasons["group.jpg"]
    assert "broken.jpg" in reasons
    assert index.people == ["alex_lacamoire", "barack_obama", "joe_biden", "kit", "lin_manuel_miranda"]
    assert index.names.count("joe_biden") == 2


def test_enroll_cli(tmp_path, capsys):
    out = tmp_path / "enc"
    assert enroll_main(["--known-faces", str(KNOWN_FACES), "--index", str(out), "--quiet"]) == 0
    assert "indexed 6 images of 4 people" in capsys.readouterr().out
    assert load_index(out).people == ["alex_lacamoire", "barack_obama", "joe_biden", "lin_manuel_miranda"]
    assert enroll_main(["--known-faces", str(tmp_path / "nope"), "--index", str(out)]) == 2


def test_probe_photos_match_by_vote(engine, sample_index_dir):
    index = load_index(sample_index_dir)
    probes = {"obama_probe.jpg": "barack_obama", "biden_probe.jpg": "joe_biden", "stranger_kit.jpg": None}
    for fname, expected in probes.items():
        rgb = cv2.cvtColor(cv2.imread(str(FIXTURES / fname)), cv2.COLOR_BGR2RGB)
        boxes = engine.detect(rgb, upsample=1)
        assert len(boxes) == 1
        assert vote(index, engine.encode(rgb, boxes))[0].name == expected


@pytest.mark.parametrize(
    "name,image,reason",
    [
        ("../../etc", "obama_probe.jpg", "must not contain"),
        ("", "obama_probe.jpg", "empty"),
        ("x" * 80, "obama_probe.jpg", "longer"),
        ("Kit", "two_people.jpg", "2 faces"),
        ("Kit", None, "no face"),
        ("Kit", b"garbage", "not a JPEG"),
    ],
)
def test_live_enrol_refusals(engine, index_copy, tmp_path, name, image, reason):
    store = IndexStore(index_copy)
    enroller = Enroller(engine, store, tmp_path / "kf")
    data = faceless_jpeg() if image is None else image if isinstance(image, bytes) else (FIXTURES / image).read_bytes()
    out = enroller.enrol(name, data)
    assert not out.ok and reason in out.reason
    assert len(store.index) == 6 and not (tmp_path / "kf").exists() or not any((tmp_path / "kf").rglob("*.jpg"))
    assert not (tmp_path / "etc").exists()


def test_live_enrol_adds_person(engine, index_copy, tmp_path):
    store = IndexStore(index_copy)
    enroller = Enroller(engine, store, tmp_path / "kf")
    out = enroller.enrol("Kit Harington", (FIXTURES / "stranger_kit.jpg").read_bytes())
    assert out.ok and out.count == 1
    assert "Kit Harington" in load_index(index_copy).people  # persisted
    assert len(list((tmp_path / "kf" / "Kit Harington").glob("capture-*.jpg"))) == 1
