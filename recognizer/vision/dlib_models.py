"""Where dlib's model files live: the `face_recognition_models` package, located without importing it.

Its ``__init__`` imports ``pkg_resources``, which recent setuptools no longer ships, so we find the
package directory through the import system instead of executing it.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

FACE_LANDMARKS_5 = "shape_predictor_5_face_landmarks.dat"
FACE_LANDMARKS_68 = "shape_predictor_68_face_landmarks.dat"
FACE_DESCRIPTOR = "dlib_face_recognition_resnet_model_v1.dat"
CNN_DETECTOR = "mmod_human_face_detector.dat"


class ModelFilesMissing(RuntimeError):
    """dlib's model files are not installed."""


def model_path(filename: str) -> Path:
    """Return the path of one of dlib's model files shipped by `face_recognition_models`."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or spec.origin is None:
        raise ModelFilesMissing(
            "dlib's model files are missing: install them with "
            "`pip install face_recognition_models` (see requirements-server.txt)"
        )
    path = Path(spec.origin).parent / "models" / filename
    if not path.is_file():
        raise ModelFilesMissing(f"dlib model file not found: {path}")
    return path
