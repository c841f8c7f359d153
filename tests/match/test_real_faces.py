"""The open-set decision on real photos: the MIT-licensed ageitgey faces shipped in the repository."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from recognizer.identity.index import FaceIndex
from recognizer.identity.match import KNOWN, SUPPORT, UNKNOWN, IdentityVoter, OpenSetParams, evidence
from recognizer.tools.seeds import vote

REPO = Path(__file__).resolve().parents[2]
KNOWN_FACES = REPO / "known_faces"
FIXTURES = REPO / "tests" / "fixtures"


def _encode(engine, path: Path) -> np.ndarray:
    rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    boxes = engine.detect(rgb, upsample=1)
    assert len(boxes) == 1, f"{path.name}: expected one face, found {len(boxes)}"
    return engine.encode(rgb, boxes)


@pytest.fixture(scope="module")
def real() -> tuple[FaceIndex, dict[str, np.ndarray]]:
    """Index of known_faces/ and encodings of the probe fixtures (skips when they are absent)."""
    probes = {p: FIXTURES / f"{p}.jpg" for p in ("biden_probe", "obama_probe", "stranger_kit")}
    if not KNOWN_FACES.is_dir() or not all(p.exists() for p in probes.values()):
        pytest.skip("known_faces/ or tests/fixtures/ not in this checkout")
    from recognizer.vision.detect import FaceEngine

    engine = FaceEngine()
    index = FaceIndex.empty()
    for person in sorted(d for d in KNOWN_FACES.iterdir() if d.is_dir()):
        for img in sorted(person.iterdir()):
            index = index.add(person.name, _encode(engine, img), [str(img)])
    return index, {name: _encode(engine, path) for name, path in probes.items()}


def test_enrolled_probes_are_accepted_and_the_stranger_is_not(real) -> None:
    index, probes = real
    ev = evidence(index, np.concatenate([probes["biden_probe"], probes["obama_probe"], probes["stranger_kit"]]))
    assert (ev[0].kind, ev[0].name) == (SUPPORT, "joe_biden")
    assert (ev[1].kind, ev[1].name) == (SUPPORT, "barack_obama")
    assert ev[2].kind != SUPPORT


def test_tracks_of_real_faces(real) -> None:
    index, probes = real
    voter = IdentityVoter(OpenSetParams())
    for _ in range(3):
        out = voter.observe_many([(1, probes["obama_probe"]), (2, probes["stranger_kit"])], index)
    assert (out[1].state, out[1].name) == (KNOWN, "barack_obama")
    assert out[2].state == UNKNOWN
    # the seeds' rule agrees on the enrolled probe
    assert vote(index, probes["obama_probe"])[0].name == "barack_obama"
