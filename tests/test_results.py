"""FaceResult: the wire form is exactly what the protocol documents, and from_wire refuses anything else by name."""
from __future__ import annotations

import json

import pytest

from recognizer.identity.match import STATES
from recognizer.liveness.blinks import LivenessState
from shared.results import FACE_STATES, LIVENESS_STATES, BadFaceResult, FaceResult, faces_from_wire, faces_to_wire


def test_the_wire_form_keeps_the_documented_keys_in_order_and_reads_back_equal() -> None:
    plain = FaceResult((10, 60, 60, 10), 3, "known", "alice", 0.41, 0.8, "live", 2)
    assert json.dumps(plain.to_wire()) == ('{"box": [10, 60, 60, 10], "track": 3, "name": "alice", "state": "known", '
                                           '"distance": 0.41, "confidence": 0.8, "liveness": "live", "blinks": 2}')
    unsure = FaceResult((1, 2, 3, 4), 5, "unsure", distance=None, candidate="bob", found_by="sweep")
    assert list(unsure.to_wire())[-2:] == ["candidate", "found_by"]
    faces = [plain, unsure]
    assert faces_from_wire(json.loads(json.dumps(faces_to_wire(faces)))) == faces


def test_fields_older_servers_leave_out_take_their_defaults() -> None:
    face = FaceResult.from_wire({"box": [1, 2, 3, 4], "track": 1, "state": "pending", "unknown_key": 1})
    assert (face.name, face.distance, face.confidence, face.liveness, face.blinks) == (None, None, 0.0, "unknown", 0)


@pytest.mark.parametrize("bad, says", [
    ([{"box": [1, 2, 3, 4.5], "track": 1, "state": "known"}], "faces[0]: face box"),
    ([{"box": [1, 2, 3, 4], "track": True, "state": "known"}], "track"),
    ([{"box": [1, 2, 3, 4], "track": 1, "state": "known", "liveness": "dead"}], "liveness must be one of"),
    ([{"box": [1, 2, 3, 4], "track": 1, "state": "known", "name": 7}], "name must be a string"),
    ([{"box": [1, 2, 3, 4], "track": 1, "state": "known", "blinks": -1}], "blinks"),
    ([{"box": [1, 2, 3, 4], "track": 1, "state": "known", "found_by": "cnn"}], "found_by"),
    ({"box": [1, 2, 3, 4]}, "faces must be a list"),
])
def test_malformed_faces_are_refused_with_the_field_named(bad, says) -> None:
    with pytest.raises(BadFaceResult) as exc:
        faces_from_wire(bad)
    assert says in str(exc.value)


def test_the_shared_vocabulary_covers_what_the_recognizer_says() -> None:
    assert set(STATES) == set(FACE_STATES)
    assert {s.value for s in LivenessState} | {"off"} == set(LIVENESS_STATES)
