"""Training commands (skipped without TensorFlow or data): a 1-epoch run exports a loadable model."""
from __future__ import annotations

import pytest

pytest.importorskip("tensorflow")

pytestmark = [pytest.mark.slow, pytest.mark.data]


def test_train_eyes_one_epoch(data, tmp_path):
    from recognizer.liveness.eyes import EyeStateModel
    from recognizer.tools.train_eyes import train

    metrics = train(data / "eyes", tmp_path, epochs=1, seed=0, test_share=0.2)
    assert metrics["heldout_accuracy"] > 0.6
    model = EyeStateModel.load(tmp_path / "eye_state.json")
    assert model.net.manifest["split"].startswith("by subject")
