"""The calibration protocol on synthetic people, and the command on the shipped sample faces."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from recognizer.identity.match import OpenSetParams
from recognizer.tools.calibrate import (
    CalibrationError,
    Photos,
    Setting,
    default_grid,
    evaluate,
    main,
    make_splits,
    recommend,
    run_grid,
)
from tests.match.synth import centres, samples

REPO = Path(__file__).resolve().parents[2]


def synthetic_photos(seed: int = 0, people: int = 10, per: int = 5) -> Photos:
    rng = np.random.default_rng(seed)
    enc = np.concatenate([samples(rng, c, per) for c in centres(rng, people)])
    names = tuple(f"p{i}" for i in range(people) for _ in range(per))
    return Photos(names, enc, tuple(f"{n}/{i}.jpg" for i, n in enumerate(names)), ())


def test_splits_hold_out_strangers_and_enrol_k() -> None:
    photos = synthetic_photos()
    for sp in make_splits(photos, k=3, stranger_share=0.3, n_splits=5, seed=1):
        enrolled = set(sp.index.names)
        assert len(enrolled) == 7 and len(sp.index) == 21
        assert len(sp.strangers) == 15 and len(sp.genuine_names) == 14
        assert set(sp.genuine_names) <= enrolled


def test_too_few_people_is_refused() -> None:
    with pytest.raises(CalibrationError, match="at least 3 people"):
        make_splits(synthetic_photos(people=2), 3, 0.3, 2, 0)


def test_rates_and_recommendation_on_separable_people() -> None:
    splits = make_splits(synthetic_photos(), 3, 0.3, 4, 0)
    r = evaluate(splits, Setting("open-set", params=OpenSetParams()).decider())
    assert r.gar > 0.95 and r.far == 0.0 and r.mis == 0.0
    best = recommend(run_grid(splits, default_grid()))
    assert best is not None and best[1].far <= 0.01 and best[1].gar == 1.0


def test_command_on_sample_faces(tmp_path: Path, capsys) -> None:
    known = REPO / "known_faces"
    if not known.is_dir():
        pytest.skip("known_faces/ not in this checkout")
    pytest.importorskip("matplotlib")
    args = [str(known), "--k", "1", "--splits", "3", "--cache", str(tmp_path), "--plot", str(tmp_path / "t.png")]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "seeds" in out and "GAR%" in out and (tmp_path / "t.png").stat().st_size > 1000
    assert main(args) == 0  # second run from the cache
    assert main([str(tmp_path / "missing")]) == 2
