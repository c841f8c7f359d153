"""Train the passive anti-spoof CNN on ../shared/data/spoof crops and export it (needs TensorFlow).

    python -m recognizer.tools.train_antispoof --data ../shared/data/spoof --out recognizer/models

The crops are frames of one person (live, and a phone replay), so a random split would leak: the
held-out figure printed here trains on the earlier frames of each video and tests on the later
ones. The shipped model is then trained on all crops. Cross-person/cross-camera figures are in
bench/liveness.py (they are much worse).
"""
from __future__ import annotations

import argparse
import logging
import re
import sys
from pathlib import Path
from typing import Any, Sequence, Tuple

import cv2
import numpy as np

from recognizer.tools.antispoof import SIDE, prepare
from recognizer.tools.train_eyes import export_keras

log = logging.getLogger(__name__)


def load_spoof(root: Path) -> Tuple[list, np.ndarray, np.ndarray]:
    """BGR crops, labels (1 = real) and frame numbers from root/{real,fake}/*_<frame>.png."""
    crops, labels, frames = [], [], []
    for label, sub in ((1, "real"), (0, "fake")):
        files = sorted((root / sub).glob("*.png"))
        if not files:
            raise FileNotFoundError(f"no crops in {root / sub}")
        for f in files:
            img = cv2.imread(str(f), cv2.IMREAD_COLOR)
            if img is None:
                continue
            m = re.search(r"(\d+)\.png$", f.name)
            crops.append(img)
            labels.append(label)
            frames.append(int(m.group(1)) if m else 0)
    return crops, np.array(labels, np.float32), np.array(frames)


def build_model(seed: int) -> Any:
    """Three 3x3 conv + max-pool stages, dense 32, sigmoid P(real), on 64x64 BGR."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    inp = keras.Input((SIDE, SIDE, 3))
    x = layers.RandomFlip("horizontal")(inp)
    x = layers.RandomTranslation(0.08, 0.08, fill_mode="nearest")(x)
    x = layers.RandomZoom(0.1, fill_mode="nearest")(x)
    for i, n in enumerate((16, 32, 32), start=1):
        x = layers.Conv2D(n, 3, padding="same", activation="relu", name=f"conv{i}")(x)
        x = layers.MaxPooling2D(2)(x)
    x = layers.Flatten()(x)
    x = layers.Dropout(0.5)(x)
    x = layers.Dense(32, activation="relu", name="fc1")(x)
    out = layers.Dense(1, activation="sigmoid", name="out")(x)
    model = keras.Model(inp, out)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy", metrics=["accuracy"])
    return model


def temporal_split(labels: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """Test mask: the later half of each video's frames."""
    test = np.zeros(len(labels), bool)
    for lab in (0, 1):
        idx = labels == lab
        test[idx] = frames[idx] > np.median(frames[idx])
    return test


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: report the temporal held-out accuracy, then train on all crops and export."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "spoof")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "models")
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        log.error("TensorFlow is needed for training: pip install -r requirements-train.txt")
        return 2
    crops, y, frames = load_spoof(args.data)
    x = prepare(crops)
    test = temporal_split(y, frames)
    model = build_model(args.seed)
    model.fit(x[~test], y[~test], epochs=args.epochs, batch_size=16, verbose=0)
    acc = float(np.mean((model.predict(x[test], verbose=0)[:, 0] > 0.5) == y[test]))
    log.info("temporal held-out accuracy (later frames, same person): %.3f on %d crops", acc, test.sum())
    model = build_model(args.seed)
    model.fit(x, y, epochs=args.epochs, batch_size=16, verbose=0)
    path = export_keras(model, args.out, "antispoof", {
        "description": "passive real/replay face-crop classifier, trained by recognizer.tools.train_antispoof",
        "input": [SIDE, SIDE, 3],
        "preprocess": "BGR crop (box + 10% margin) resized to 64x64 (INTER_AREA), per-crop standardize",
        "output": "p_real",
        "training_data": "Apfol/liveness-detection-opencv live vs phone-replay crops of ONE person "
                         "(../shared/data/spoof, no licence: internal testing only)",
        "n_train": len(y), "epochs": args.epochs, "seed": args.seed,
        "temporal_heldout_accuracy": round(acc, 3),
        "warning": "one person, one phone, one camera: generalises poorly (docs/liveness.md)",
    })
    print(f"temporal held-out accuracy {acc:.3f}; shipped model (all crops) -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
