"""facemon-enrol refuses a folder build where two people's folders hold one face (Capture's `looks_like` rule), and
builds it when the pair is confirmed deliberately. Real photos, the real command's main()."""
from __future__ import annotations

import shutil

import pytest

from recognizer.identity.enrol import main
from recognizer.identity.index import load_index
from recognizer.identity.lookalike import shared_faces
from recognizer.identity.match import OpenSetParams
from tests.conftest import FIXTURES, KNOWN_FACES

pytestmark = pytest.mark.timeout(300)


def test_the_shipped_gallery_holds_no_shared_face(sample_index_dir):
    assert shared_faces(load_index(sample_index_dir), OpenSetParams().accept_distance) == []


def test_two_folders_with_one_face_are_refused_unless_confirmed(tmp_path, capsys, caplog):
    faces = tmp_path / "known_faces"
    shutil.copytree(KNOWN_FACES / "barack_obama", faces / "barack_obama")
    shutil.copytree(KNOWN_FACES / "joe_biden", faces / "joe_biden")
    (faces / "test_evaluator").mkdir()
    shutil.copy(FIXTURES / "obama_probe.jpg", faces / "test_evaluator" / "me.jpg")  # Obama's face, another name
    index = tmp_path / "encodings"
    assert main(["--quiet", "--known-faces", str(faces), "--index", str(index)]) == 2
    err = capsys.readouterr().err
    assert "refused" in err and "two people's folders hold one face" in err
    assert "test_evaluator/me.jpg (test_evaluator) looks like barack_obama (0." in err
    assert "--confirm-lookalike test_evaluator,barack_obama" in err
    assert "joe_biden" not in err  # only the pair that shares a face
    assert not index.exists()  # nothing written

    assert main(["--quiet", "--known-faces", str(faces), "--index", str(index), "--confirm-lookalike", "nobody,x"]) == 2
    assert main(["--quiet", "--known-faces", str(faces), "--index", str(index), "--confirm-lookalike", "a"]) == 2
    assert "two different names as NAME,OTHER" in capsys.readouterr().err

    # confirmed (either order): built, and the log says it was deliberate
    assert main(["--quiet", "--known-faces", str(faces), "--index", str(index),
                 "--confirm-lookalike", "barack_obama,test_evaluator"]) == 0
    assert "test_evaluator" in load_index(index).people
    assert any("looks like barack_obama" in r.getMessage() and "confirmed deliberately" in r.getMessage()
               for r in caplog.records)


def test_a_folder_import_enrols_a_lookalike_only_when_its_pair_is_confirmed(tmp_path, engine):
    """The import path (facemon-enrol --dashboard-url goes through the same Enroller as a Capture): the lookalike photo
    is skipped with its reason, and enrolled when --confirm-lookalike names the pair."""
    from recognizer.identity.enrol import Enroller, import_folder
    from recognizer.identity.index import IndexStore

    faces = tmp_path / "known_faces"
    shutil.copytree(KNOWN_FACES / "barack_obama", faces / "barack_obama")
    (faces / "test_evaluator").mkdir()
    shutil.copy(FIXTURES / "obama_probe.jpg", faces / "test_evaluator" / "me.jpg")
    for confirmed, want in (((), False), ({frozenset(("test_evaluator", "barack_obama"))}, True)):
        store = IndexStore(tmp_path / f"index-{want}")
        done, skipped = import_folder(Enroller(engine, store, tmp_path / f"photos-{want}"), faces, "test",
                                      confirmed=confirmed)
        assert ("test_evaluator" in store.index.people) == want, skipped
        assert any("looks like barack_obama" in why for _p, why in skipped) != want
