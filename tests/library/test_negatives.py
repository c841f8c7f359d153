"""Negatives in the matcher: a face kept as "not X" stops faces like it being accepted as X, and nobody else's
acceptance changes (synthetic vectors always; ../shared/data/faces when present)."""
from __future__ import annotations

import numpy as np

from bench.negatives import PERMISSIVE, negative_effect
from recognizer.identity.index import MODEL_ID, FaceIndex
from recognizer.identity.match import NONE, SUPPORT, OpenSetParams, evidence


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v)).astype(np.float32)


def test_a_negative_vetoes_only_faces_closer_to_it_than_to_the_person() -> None:
    rng = np.random.default_rng(7)
    x, y = _unit(rng.normal(size=128)), _unit(rng.normal(size=128))
    near = lambda c, s: _unit(c + rng.normal(0, s, 128))  # noqa: E731
    xs = np.stack([near(x, 0.03) for _ in range(3)])
    ys = np.stack([near(y, 0.03) for _ in range(3)])
    lookalike = _unit(x + 0.35 * _unit(rng.normal(size=128)))  # close enough to x to pass as x
    params = OpenSetParams(min_votes=1, margin=0.0, accept_distance=0.58)
    plain = FaceIndex(("x",) * 3 + ("y",) * 3, np.concatenate([xs, ys]), ("",) * 6, MODEL_ID)
    probe_like = _unit(lookalike + rng.normal(0, 0.01, 128))
    genuine = near(x, 0.03)
    before = evidence(plain, np.stack([probe_like, genuine, ys[0]]), params)
    assert [e.kind for e in before] == [SUPPORT, SUPPORT, SUPPORT] and before[0].name == "x"
    with_neg = FaceIndex(plain.names, plain.encodings, plain.sources, MODEL_ID, "", ("x",), lookalike[None, :])
    after = evidence(with_neg, np.stack([probe_like, genuine, ys[0]]), params)
    # the lookalike is no longer accepted as x, nor "not sure" about x: it counts as nobody's (a stranger)
    assert after[0].kind == NONE and after[0].name == "x", "the lookalike is no longer accepted as x"
    assert [(e.kind, e.name) for e in after[1:]] == [(SUPPORT, "x"), (SUPPORT, "y")], "nobody else changes"
    # a negative of someone not enrolled, or of y, does not touch x's acceptance
    other = FaceIndex(plain.names, plain.encodings, plain.sources, MODEL_ID, "", ("y", "nobody"), np.stack([lookalike, lookalike]))
    assert evidence(other, probe_like[None, :], params)[0].kind == SUPPORT


def test_on_real_faces_one_negative_refuses_the_closest_stranger_and_changes_nobody_else(data_dir, tmp_path_factory) -> None:
    from bench.accuracy import _engine
    from recognizer.tools.calibrate import encode_folder

    photos = encode_folder(data_dir / "faces", _engine, tmp_path_factory.mktemp("negatives-cache"))
    e = negative_effect(photos.names, photos.encodings, list(photos.sources), PERMISSIVE)
    assert e.before and not e.after, e
    assert e.same_stranger_after <= e.same_stranger_before
    assert e.strangers_changed == 0 and e.genuine_changed == 0, e
    assert e.genuine_accepted > 0.8 * e.genuine  # the operating point still names people


def test_negatives_survive_a_node_s_local_copy(tmp_path) -> None:
    from recognizer.identity.index import load_index, save_index

    rng = np.random.default_rng(1)
    ix = FaceIndex(("x",), _unit(rng.normal(size=128))[None, :], ("a",), MODEL_ID, "", ("x",), _unit(rng.normal(size=128))[None, :])
    save_index(ix, tmp_path)
    back = load_index(tmp_path)
    assert back.negative_names == ("x",) and np.array_equal(back.negatives, ix.negatives)
    assert back.add("y", ix.encodings, ["b"]).negative_names == ("x",)  # adding someone keeps the negatives
