"""Train the eye-state CNN on the CEW patches and export it for numpy inference (needs TensorFlow).

    python -m recognizer.tools.train_eyes --data ../shared/data/eyes --out recognizer/models

Splits CEW by subject (open: the LFW name in the file name; closed: the source photo), holds out
``--test-share`` of the subjects, trains on the rest, reports held-out accuracy from Keras *and*
from the numpy runner, and writes ``eye_state.npz`` + ``eye_state.json``. TensorFlow comes from
``requirements-train.txt``; the recognizer itself never imports it.
"""
from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import logging
import re
import sys
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import cv2
import numpy as np

from recognizer.liveness.eyes import PATCH, SmallCNN, standardize

log = logging.getLogger(__name__)

_OPEN_SUBJECT = re.compile(r"^(.*)_\d+_[LR]\.\w+$")
_CLOSED_PHOTO = re.compile(r"^(closed_eye_\d+)")


def subject_of(name: str) -> str:
    """Group key of a CEW file name: the LFW person for open eyes, the source photo for closed."""
    for pattern in (_CLOSED_PHOTO, _OPEN_SUBJECT):
        m = pattern.match(name)
        if m:
            return m.group(1)
    return name


def load_cew(root: Path) -> Tuple[np.ndarray, np.ndarray, List[str]]:
    """Patches (n, 24, 24) uint8, labels (1 = closed) and group keys from root/{open,closed}."""
    xs, ys, groups = [], [], []
    for label, sub in ((0, "open"), (1, "closed")):
        files = sorted((root / sub).glob("*.jpg"))
        if not files:
            raise FileNotFoundError(f"no CEW patches in {root / sub}")
        for f in files:
            img = cv2.imread(str(f), cv2.IMREAD_GRAYSCALE)
            if img is None:
                log.warning("unreadable %s", f)
                continue
            xs.append(cv2.resize(img, (PATCH, PATCH), interpolation=cv2.INTER_AREA))
            ys.append(label)
            groups.append(f"{sub}/{subject_of(f.name)}")
    return np.stack(xs), np.array(ys, np.float32), groups


def group_split(groups: Sequence[str], test_share: float, seed: int) -> np.ndarray:
    """Boolean test mask holding out `test_share` of the groups (subjects), fixed by `seed`."""
    keys = sorted(set(groups))
    rng = np.random.default_rng(seed)
    rng.shuffle(keys)
    test = set(keys[: int(round(len(keys) * test_share))])
    return np.array([g in test for g in groups])


def degrade(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Low-resolution copies (down to 8-16 px and back up) so tiny webcam eyes look familiar."""
    out = np.empty_like(x)
    for i, img in enumerate(x):
        s = int(rng.integers(8, 17))
        small = cv2.resize(img, (s, s), interpolation=cv2.INTER_AREA)
        out[i] = cv2.resize(small, (PATCH, PATCH), interpolation=cv2.INTER_LINEAR)
    return out


def export_keras(model: Any, out_dir: Path, stem: str, extra: Dict[str, Any]) -> Path:
    """Write a Keras conv/pool/dense model as `<stem>.npz` + `<stem>.json` for `SmallCNN`."""
    import keras  # noqa: F401  (only to make the dependency explicit)

    layers: List[Dict[str, Any]] = []
    weights: Dict[str, np.ndarray] = {}
    for layer in model.layers:
        kind = type(layer).__name__
        if kind == "Conv2D":
            if tuple(layer.strides) != (1, 1) or tuple(layer.dilation_rate) != (1, 1):
                raise ValueError(f"{layer.name}: only stride 1, dilation 1 convolutions export")
            layers.append({"type": "conv", "name": layer.name, "padding": layer.padding,
                           "activation": layer.activation.__name__})
        elif kind == "MaxPooling2D":
            layers.append({"type": "maxpool", "size": int(layer.pool_size[0])})
            continue
        elif kind == "Flatten":
            layers.append({"type": "flatten"})
            continue
        elif kind == "Dense":
            layers.append({"type": "dense", "name": layer.name, "activation": layer.activation.__name__})
        else:  # input, augmentation and dropout layers do nothing at inference
            continue
        kernel, bias = layer.get_weights()
        weights[f"{layer.name}/kernel"] = kernel.astype(np.float32)
        weights[f"{layer.name}/bias"] = bias.astype(np.float32)
    out_dir.mkdir(parents=True, exist_ok=True)
    npz = out_dir / f"{stem}.npz"
    np.savez_compressed(npz, **weights)
    import tensorflow as tf

    manifest = {
        "weights": npz.name,
        "sha256": hashlib.sha256(npz.read_bytes()).hexdigest(),
        "layers": layers,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "tensorflow": tf.__version__,
        **extra,
    }
    path = out_dir / f"{stem}.json"
    path.write_text(json.dumps(manifest, indent=1) + "\n")
    return path


def build_model(seed: int) -> Any:
    """LeNet-style net: 2 x (3x3 conv + 2x2 max-pool), dense 64, sigmoid P(closed)."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    inp = keras.Input((PATCH, PATCH, 1))
    x = layers.RandomFlip("horizontal")(inp)  # left and right eyes look alike mirrored
    x = layers.RandomTranslation(0.1, 0.1, fill_mode="nearest")(x)
    x = layers.RandomRotation(0.05, fill_mode="nearest")(x)
    x = layers.RandomZoom(0.15, fill_mode="nearest")(x)
    x = layers.Conv2D(16, 3, activation="relu", name="conv1")(x)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Conv2D(32, 3, activation="relu", name="conv2")(x)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(64, activation="relu", name="fc1")(x)
    x = layers.Dropout(0.4)(x)
    out = layers.Dense(1, activation="sigmoid", name="out")(x)
    model = keras.Model(inp, out)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy", metrics=["accuracy"])
    return model


def train(data: Path, out_dir: Path, epochs: int, seed: int, test_share: float) -> Dict[str, Any]:
    """Train, evaluate on held-out subjects, export; return the metrics written to the manifest."""
    x, y, groups = load_cew(data)
    test = group_split(groups, test_share, seed)
    rng = np.random.default_rng(seed)
    xtr, ytr = x[~test], y[~test]
    xtr = np.concatenate([xtr, degrade(xtr, rng)])
    ytr = np.concatenate([ytr, ytr])
    model = build_model(seed)
    model.fit(standardize(xtr), ytr, epochs=epochs, batch_size=64, verbose=2,
              validation_data=(standardize(x[test]), y[test]))
    keras_acc = float(np.mean((model.predict(standardize(x[test]), verbose=0)[:, 0] > 0.5) == y[test]))
    extra = {
        "description": "CEW eye state (open/closed), LeNet-style, trained by recognizer.tools.train_eyes",
        "input": [PATCH, PATCH, 1],
        "preprocess": "per-patch standardize (mean 0, std 1, std floor 4 grey levels)",
        "output": "p_closed",
        "training_data": "CEW 'Closed Eyes In The Wild' 24x24 patches (Song et al. 2014; research use), "
                         "../shared/data/eyes",
        "split": f"by subject, {test_share:.0%} of subjects held out, seed {seed}",
        "n_train": int((~test).sum()), "n_test": int(test.sum()), "epochs": epochs, "seed": seed,
        "heldout_accuracy": round(keras_acc, 4),
    }
    path = export_keras(model, out_dir, "eye_state", extra)
    net = SmallCNN.load(path)
    np_acc = float(np.mean((net.forward(standardize(x[test]))[:, 0] > 0.5) == y[test]))
    log.info("held-out accuracy: keras %.4f, numpy %.4f (%d test patches, %d subjects' worth)",
             keras_acc, np_acc, test.sum(), len({g for g, t in zip(groups, test) if t}))
    if abs(np_acc - keras_acc) > 0.002:
        raise RuntimeError(f"numpy inference disagrees with Keras: {np_acc:.4f} vs {keras_acc:.4f}")
    return {**extra, "numpy_accuracy": np_acc, "manifest": str(path)}


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: train and export the eye-state model."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "eyes",
                    help="folder with open/ and closed/ CEW patches (default: ../shared/data/eyes)")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "models",
                    help="where eye_state.npz/.json go (default: recognizer/models)")
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--test-share", type=float, default=0.2, help="share of subjects held out (default 0.2)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        log.error("TensorFlow is needed for training: pip install -r requirements-train.txt")
        return 2
    metrics = train(args.data, args.out, args.epochs, args.seed, args.test_share)
    print(f"held-out accuracy {metrics['heldout_accuracy']:.4f} on {metrics['n_test']} patches -> {metrics['manifest']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
