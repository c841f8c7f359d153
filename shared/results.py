"""One face in a RESULT: what the recognizer says about a face on a frame, and its JSON form on the wire.

The recognizer's pipeline makes `FaceResult`s; annotate, alerts, replay and the sign-in check read their
attributes; the server sends `to_wire()` in a RESULT's `faces` (docs/protocol.md) and the edge reads them
back with `from_wire()`, which checks every field and raises `BadFaceResult` naming the one that is wrong.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional

# identity verdicts: pending (not enough evidence yet), known (named), unknown (a stranger), unsure (seen badly)
PENDING, KNOWN, UNKNOWN, UNSURE = "pending", "known", "unknown", "unsure"
FACE_STATES = (PENDING, KNOWN, UNKNOWN, UNSURE)
# recognizer.liveness.blinks.LivenessState values, plus "off" (the recognizer runs without liveness)
LIVENESS_STATES = ("unknown", "live", "no_blink", "eyes_closed", "off")
FOUND_BY = ("hog", "sweep")  # detector hog+cnn: the per-frame detector or a CNN sweep found the face


class BadFaceResult(ValueError):
    """A face in a RESULT that does not have the form of docs/protocol.md."""


Box = tuple[int, int, int, int]  # top, right, bottom, left in pixels of the frame


@dataclass(frozen=True)
class FaceResult:
    """One tracked face on one frame. `distance`: to the best match (None: no match yet); `confidence` 0..1;
    `name` only when `state` is known; `candidate`: the best guess of an unsure face; `found_by`: only with
    detector hog+cnn."""

    box: Box
    track: int
    state: str
    name: Optional[str] = None
    distance: Optional[float] = None
    confidence: float = 0.0
    liveness: str = "unknown"
    blinks: int = 0
    candidate: Optional[str] = None
    found_by: Optional[str] = None
    review: Optional[tuple[bytes, bytes]] = field(default=None, compare=False, repr=False)
    """An unknown or unsure face's encoding (128 little-endian float32) and JPEG crop, from the frame it was last
    encoded on: for the dashboard's review queue (sent with the unknown_face alert), never to the edge."""

    @property
    def area(self) -> float:
        """Box area in square pixels (0 for a degenerate box)."""
        top, right, bottom, left = self.box
        return float(max(0, bottom - top) * max(0, right - left))

    def to_wire(self) -> dict:
        """The JSON object sent in a RESULT's `faces` (key order as docs/protocol.md shows it)."""
        out: dict = {
            "box": list(self.box), "track": self.track, "name": self.name, "state": self.state,
            "distance": self.distance, "confidence": self.confidence, "liveness": self.liveness, "blinks": self.blinks,
        }
        if self.candidate is not None:
            out["candidate"] = self.candidate
        if self.found_by is not None:
            out["found_by"] = self.found_by
        return out

    @classmethod
    def from_wire(cls, obj: Any) -> "FaceResult":
        """A face from its JSON object; `BadFaceResult` naming the field when it is not of the documented form.
        `confidence`, `liveness` and `blinks` may be missing (older servers); unknown keys are ignored."""
        if not isinstance(obj, dict):
            raise BadFaceResult(f"a face must be a JSON object, got {type(obj).__name__}")
        box = obj.get("box")
        if not isinstance(box, list) or len(box) != 4 or not all(_is_int(v) for v in box):
            raise BadFaceResult(f"face box must be 4 integers [top, right, bottom, left], got {box!r:.60}")
        track = obj.get("track")
        if not _is_int(track):
            raise BadFaceResult(f"face track must be an integer, got {track!r:.40}")
        state = obj.get("state")
        if state not in FACE_STATES:
            raise BadFaceResult(f"face state must be one of {', '.join(FACE_STATES)}, got {state!r:.40}")
        liveness = obj.get("liveness", "unknown")
        if liveness not in LIVENESS_STATES:
            raise BadFaceResult(f"face liveness must be one of {', '.join(LIVENESS_STATES)}, got {liveness!r:.40}")
        found_by = obj.get("found_by")
        if found_by is not None and found_by not in FOUND_BY:
            raise BadFaceResult(f"face found_by must be one of {', '.join(FOUND_BY)}, got {found_by!r:.40}")
        blinks = obj.get("blinks", 0)
        if not _is_int(blinks) or blinks < 0:
            raise BadFaceResult(f"face blinks must be a count, got {blinks!r:.40}")
        return cls(
            box=tuple(box), track=track, state=state, name=_optional_str(obj, "name"),
            distance=_optional_number(obj, "distance"), confidence=_number(obj.get("confidence", 0.0), "confidence"),
            liveness=liveness, blinks=blinks, candidate=_optional_str(obj, "candidate"), found_by=found_by,
        )


def faces_to_wire(faces: Iterable[FaceResult]) -> list[dict]:
    """A RESULT's `faces` list."""
    return [f.to_wire() for f in faces]


def faces_from_wire(obj: Any) -> list[FaceResult]:
    """A RESULT's `faces` list read back; `BadFaceResult` (with the face's position) when one is malformed."""
    if not isinstance(obj, list):
        raise BadFaceResult(f"faces must be a list, got {type(obj).__name__}")
    out = []
    for i, face in enumerate(obj):
        try:
            out.append(FaceResult.from_wire(face))
        except BadFaceResult as exc:
            raise BadFaceResult(f"faces[{i}]: {exc}") from None
    return out


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any, what: str) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise BadFaceResult(f"face {what} must be a finite number, got {value!r:.40}")
    return value


def _optional_number(obj: dict, key: str) -> Optional[float]:
    value = obj.get(key)
    return None if value is None else _number(value, key)


def _optional_str(obj: dict, key: str) -> Optional[str]:
    value = obj.get(key)
    if value is not None and not isinstance(value, str):
        raise BadFaceResult(f"face {key} must be a string or null, got {value!r:.40}")
    return value
