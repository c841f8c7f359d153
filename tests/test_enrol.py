"""Enrolment and the index: real photos in, .npz + manifest out; bad images skipped with reasons."""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from recognizer.identity.enrol import Enroller, build_index, collect_known_faces
from recognizer.identity.enrol import main as enrol_main
from recognizer.identity.index import (
    FaceIndex,
    IndexCorrupt,
    IndexMissing,
    IndexModelMismatch,
    IndexStore,
    load_index,
    save_index,
)
from recognizer.tools.seeds import vote
from shared.jpeg import encode_jpeg
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


def test_enrol_cli(tmp_path, capsys):
    out = tmp_path / "enc"
    assert enrol_main(["--known-faces", str(KNOWN_FACES), "--index", str(out), "--quiet"]) == 0
    assert "indexed 6 images of 4 people" in capsys.readouterr().out
    assert load_index(out).people == ["alex_lacamoire", "barack_obama", "joe_biden", "lin_manuel_miranda"]
    assert enrol_main(["--known-faces", str(tmp_path / "nope"), "--index", str(out)]) == 2


@pytest.mark.parametrize("variable", ["FACEMON_ENROL_DASHBOARD_URL", "FACEMON_ENROLL_DASHBOARD_URL"])
def test_enrol_reads_its_variable_and_the_old_spelling(tmp_path, capsys, monkeypatch, variable):
    """One spelling, enrol; the old FACEMON_ENROLL_* variables and the facemon-enroll command still work."""
    monkeypatch.setenv(variable, "http://127.0.0.1:9")
    assert enrol_main(["--known-faces", str(KNOWN_FACES), "--index", str(tmp_path / "enc")]) == 2
    assert "--dashboard-url needs --dashboard-token" in capsys.readouterr().err
    scripts = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    assert 'facemon-enrol = "recognizer.identity.enrol:main"' in scripts
    assert 'facemon-enroll = "recognizer.identity.enrol:main"' in scripts


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


# ---- which face is enrolled: stray detections, faces cut by the edge, small faces (issue 9) ----

from recognizer.identity.enrol import (  # noqa: E402
    CAPTURE_RULES,
    EnrolRefused,
    choose_enrolment_face,
    face_encoding_for_enrolment,
    progress_for,
)
from recognizer.vision.detect import Detection  # noqa: E402


def _det(size: int, score: float, at_edge: bool = False, left: int = 100) -> Detection:
    return Detection((100, left + size, 100 + size, left), score, at_edge)


def test_small_low_score_detection_beside_a_dominant_face_is_ignored_but_two_people_are_refused():
    main = _det(224, 2.01)
    # measured on a real enrolment photo: a 44 px, 0.10 detection in a dark background
    assert choose_enrolment_face([main, _det(44, 0.10, left=900)], (811, 1280)) is main
    # two real faces (a real group photo's figures: 108 px/2.40 and 76 px/2.51): refused
    with pytest.raises(EnrolRefused, match="2 faces"):
        choose_enrolment_face([_det(108, 2.40), _det(76, 2.51, left=300)], (700, 501))
    # small but confidently a face (a child in the background): a person, refused
    with pytest.raises(EnrolRefused, match="2 faces"):
        choose_enrolment_face([main, _det(60, 1.9, left=900)], (811, 1280))
    # low score but nearly as large as the main face: not "much smaller", refused
    with pytest.raises(EnrolRefused, match="2 faces"):
        choose_enrolment_face([main, _det(156, 0.40, left=900)], (1428, 2000))
    with pytest.raises(EnrolRefused, match="no face"):
        choose_enrolment_face([], (480, 640))


def test_capture_rules_refuse_a_face_at_the_edge_or_small_in_the_frame():
    with pytest.raises(EnrolRefused, match="edge of the picture"):
        choose_enrolment_face([_det(200, 1.5, at_edge=True)], (480, 640), CAPTURE_RULES)
    with pytest.raises(EnrolRefused, match="smaller than 144 px"):  # 15 % of a 960-pixel frame
        choose_enrolment_face([_det(129, 1.2)], (960, 1280), CAPTURE_RULES)
    assert choose_enrolment_face([_det(129, 1.2)], (960, 1280)).size == 129  # a chosen photo in a folder: fine


def test_real_photo_with_a_faint_background_detection_is_enrolled(engine, data_dir):
    photo = data_dir / "faces" / "elon_musk" / "deepface_img67.jpg"
    if not photo.is_file():
        pytest.skip(f"{photo} is missing")
    bgr = cv2.imread(str(photo))
    assert len(engine.detect_scored(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), 1)) == 2  # the stray one is there
    encoding, face = face_encoding_for_enrolment(engine, bgr)
    assert encoding.shape == (128,) and face.size > 200


def test_real_group_photos_are_still_refused(engine, data_dir):
    photos = sorted((data_dir / "group").glob("*.jpg"))
    assert photos
    for photo in photos:
        with pytest.raises(EnrolRefused, match=r"\d faces"):
            face_encoding_for_enrolment(engine, cv2.imread(str(photo)))


def test_real_partial_faces_refused_for_capture_only(engine, data_dir):
    partial = data_dir / "edge" / "partial_face" / "ageitgey_obama_partial_face.jpg"
    if not partial.is_file():
        pytest.skip(f"{partial} is missing")
    bgr = cv2.imread(str(partial))
    with pytest.raises(EnrolRefused, match="edge of the picture"):
        face_encoding_for_enrolment(engine, bgr, CAPTURE_RULES)


def test_capture_refuses_cut_and_small_faces_and_returns_the_enrolled_crop(engine, tmp_path):
    store = IndexStore(tmp_path / "encodings")
    enroller = Enroller(engine, store, tmp_path / "known")
    kit = cv2.imread(str(FIXTURES / "stranger_kit.jpg"))
    cut = enroller.enrol("Kit", encode_jpeg(kit[:, 703:]))  # the face runs off the left edge
    assert not cut.ok and "edge of the picture" in cut.reason
    biden = cv2.imread(str(FIXTURES / "biden_probe.jpg"))
    far = np.full((960, 1280, 3), 90, np.uint8)
    far[300:600, 500:800] = cv2.resize(biden, (300, 300))  # a 129 px face in a 960-line frame: someone far off
    small = enroller.enrol("Joe", encode_jpeg(far))
    assert not small.ok and "come closer" in small.reason
    assert not (tmp_path / "known").exists() and len(store.index) == 0  # nothing enrolled by a refusal
    ok = enroller.enrol("Joe", encode_jpeg(biden))
    assert ok.ok and ok.box is not None
    top, right, bottom, left = ok.box
    assert 0 < left < right < biden.shape[1] and 0 < top < bottom < biden.shape[0]
    crop = cv2.imdecode(np.frombuffer(ok.crop, np.uint8), cv2.IMREAD_COLOR)
    assert crop is not None and max(crop.shape[:2]) <= 240
    assert len(engine.detect(cv2.cvtColor(crop, cv2.COLOR_BGR2RGB), 1)) == 1  # the crop shows that face


def test_folder_without_a_usable_image_is_named(engine, tmp_path):
    root = tmp_path / "known"
    shutil.copytree(KNOWN_FACES / "joe_biden", root / "joe_biden")
    (root / "ghost").mkdir()
    (root / "ghost" / "desk.jpg").write_bytes(faceless_jpeg())
    (root / "ghost" / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    index, skipped = build_index(engine, root)
    assert index.people == ["joe_biden"]
    named = [(p, r) for p, r in skipped if "no usable image" in r]
    assert named == [(root / "ghost", "no usable image for 'ghost': all 2 skipped, so 'ghost' is not enrolled")]


def test_progress_is_a_bar_on_a_terminal_and_lines_in_a_log(tmp_path, capsys):
    import io

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert progress_for(Tty()).__name__ == "_progress_bar"
    log_file = io.StringIO()
    draw = progress_for(log_file)
    for i in range(21):
        draw(i, 20, tmp_path / f"img{i}.jpg")
    err = capsys.readouterr().err
    assert "\r" not in err and err.count("\n") == 11 and err.endswith("20/20 images done\n")


# ---- enrolment that cannot confuse two people (issue 19) ----


def test_a_face_already_enrolled_under_another_name_is_refused_unless_confirmed(engine, index_copy, tmp_path, caplog):
    """Obama's other photo as "Test Evaluator": refused with who it looks like; a confirmation of someone else does
    not carry over; the deliberate confirmation enrols it and says so; his own name needs no confirmation."""
    store = IndexStore(index_copy)
    enroller = Enroller(engine, store, tmp_path / "kf")
    photo = (FIXTURES / "obama_probe.jpg").read_bytes()
    refused = enroller.enrol("Test Evaluator", photo)
    assert not refused.ok and refused.code == "looks_like" and refused.lookalike.name == "barack_obama"
    assert refused.reason.startswith(f"looks like barack_obama ({refused.lookalike.distance:.2f})")
    assert refused.lookalike.distance <= 0.58 and refused.crop  # the operator sees which face was refused
    assert "Test Evaluator" not in store.index.people and not (tmp_path / "kf").exists()
    assert enroller.enrol("barack_obama", photo).ok  # more photos of the same person are welcome
    wrong = enroller.enrol("Test Evaluator", photo, confirm_lookalike="joe_biden")
    assert not wrong.ok and wrong.code == "looks_like"
    caplog.set_level(logging.WARNING, logger="recognizer.identity.enrol")
    confirmed = enroller.enrol("Test Evaluator", photo, by="desk-01/admin", confirm_lookalike="barack_obama")
    assert confirmed.ok and "confirmed deliberately" in confirmed.reason and "barack_obama" in confirmed.reason
    assert any("confirmed deliberately" in r.getMessage() and "desk-01/admin" in r.getMessage() for r in caplog.records)
    assert "Test Evaluator" in load_index(index_copy).people
    # now two names share that face: either one is refused under the other's likeness
    assert enroller.enrol("barack_obama", photo).code == "looks_like"
    assert enroller.enrol("Kit Harington", (FIXTURES / "stranger_kit.jpg").read_bytes()).ok  # a stranger is not alike


def test_lookalike_rule_is_pure_and_takes_the_closest_other_person():
    from recognizer.identity.index import FaceIndex
    from recognizer.identity.lookalike import find_lookalike, lookalike_refusal

    rng = np.random.default_rng(7)
    a, b = rng.normal(size=128).astype(np.float32), rng.normal(size=128).astype(np.float32)
    a, b = a / np.linalg.norm(a) * 0.3, b / np.linalg.norm(b) * 0.3
    index = FaceIndex.empty().add("ann", a[None, :], ["a"]).add("bob", b[None, :], ["b"])
    probe = a + 0.01
    found = find_lookalike(index, probe, "new", 0.58)
    assert found is not None and found.name == "ann" and found.distance < 0.2
    assert find_lookalike(index, probe, "ann", 0.58) is None or find_lookalike(index, probe, "ann", 0.58).name == "bob"
    assert find_lookalike(FaceIndex.empty(), probe, "new", 0.58) is None
    assert find_lookalike(index, probe + 5.0, "new", 0.58) is None  # far from everyone
    assert lookalike_refusal(found, "ann") is None and "looks like ann" in lookalike_refusal(found, "bob")
