"""1:1 face verification for sign-in: is the one face in front of the camera the account holder, alive?

Pure state, no images or sockets: the recognizer feeds one `Observation` per frame (how many
faces, the distance of the face to the claimed identity's enrolled encodings and to anyone
else's, the blinks liveness has counted on it) and gets a `Progress` back. The check passes only
after `frames` consecutive agreeing frames (one face, nearest-encoding distance to the claimed
person ≤ `accept_distance`, at least `margin` closer than any other enrolled person: the same
rule as `recognizer.identity.match.evidence`, but against the claimed identity only) with a blink seen
during that run, all within `timeout_s`. Anything else resets the run; a face that is clearly
someone else for `mismatch_frames` frames in a row fails at once ("not the account holder").
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from recognizer.settings import check_value, setting
from shared.signin import (CANCELLED, NO_BLINK, NO_FACE, NOT_ENROLLED, NOT_HOLDER, SEVERAL_FACES, TIMED_OUT,
                           VERIFY_FRAMES, VERIFY_TIMEOUT, describe)

PENDING, PASSED, FAILED = "pending", "passed", "failed"


@dataclass(frozen=True)
class VerifyParams:
    """Thresholds of the face check. Distances are Euclidean between dlib 128-D encodings; times in seconds."""

    frames: int = VERIFY_FRAMES.default
    """N: consecutive agreeing frames needed (the edge's --verify-frames asks for it)."""
    timeout_s: float = VERIFY_TIMEOUT.default
    """The whole check must pass within this time, counted from the first frame (--verify-timeout)."""
    accept_distance: float = setting("accept_distance").default
    """The claimed person's distance (their nearest photo or mean encoding) must be within this; the recognizer
    passes its own --accept-distance (`OpenSetParams.accept_distance`)."""
    margin: float = setting("margin").default
    """Every other enrolled person must be at least this much farther than the claimed one (--margin)."""
    require_blink: bool = True
    """A blink must be seen during the agreeing run (a still photo never passes)."""
    mismatch_frames: int = 5
    """Consecutive single-face frames that do not agree after which the check fails as not the holder."""

    def __post_init__(self) -> None:
        # bounds declared once: the frames and time in shared.signin (the edge asks within them), the distances in
        # recognizer/settings.py (as for OpenSetParams)
        VERIFY_FRAMES.check(self.frames, f"frames ({VERIFY_FRAMES.flag})")
        VERIFY_TIMEOUT.check(self.timeout_s, f"timeout_s ({VERIFY_TIMEOUT.flag})")
        check_value("accept_distance", self.accept_distance, "accept_distance")
        check_value("margin", self.margin, "margin")
        if self.mismatch_frames < 1:
            raise ValueError(f"mismatch_frames must be at least 1, got {self.mismatch_frames}")


@dataclass(frozen=True)
class Observation:
    """What one frame showed. `distance`: to the claimed person's closest encoding; `other`: to anyone
    else's (inf when nobody else is enrolled); `blinks`: liveness's running blink count for this face."""

    t: float
    faces: int
    distance: float = math.inf
    other: float = math.inf
    blinks: int = 0


@dataclass(frozen=True)
class Progress:
    """Where the check stands. `reason`: the failure reason when failed, else the current problem ("" if none)."""

    state: str
    reason: str
    agreeing: int
    needed: int
    blinked: bool
    elapsed_s: float
    remaining_s: float
    frames_seen: int

    @property
    def done(self) -> bool:
        return self.state != PENDING

    def to_dict(self) -> dict:
        return {
            "state": self.state,
            "reason": self.reason,
            "message": describe(self.reason) if self.reason else "",
            "agreeing": self.agreeing,
            "needed": self.needed,
            "blinked": self.blinked,
            "elapsed_s": round(self.elapsed_s, 2),
            "remaining_s": round(self.remaining_s, 2),
            "frames_seen": self.frames_seen,
        }


class Verifier:
    """One sign-in attempt for `identity`; feed it frames in time order. Final once passed or failed."""

    def __init__(self, identity: str, params: VerifyParams = VerifyParams(), enrolled: bool = True) -> None:
        self.identity = identity
        self.params = params
        self._start: Optional[float] = None
        self._now = 0.0
        self._run = 0
        self._run_blinks: Optional[int] = None  # blink count when the current run began
        self._blinked = False
        self._mismatch = 0
        self._problem = ""
        self._seen = 0
        self._state = PENDING
        self._reason = ""
        if not enrolled:
            self._finish(FAILED, NOT_ENROLLED)

    def agrees(self, obs: Observation) -> bool:
        """One face, close enough to the claimed person, and clearly closer to them than to anyone else."""
        p = self.params
        return obs.faces == 1 and obs.distance <= p.accept_distance and obs.other - obs.distance >= p.margin

    def observe(self, obs: Observation) -> Progress:
        """Feed one frame; returns the progress after it. Frames after the decision change nothing."""
        if self._state != PENDING:
            return self.progress
        if self._start is None:
            self._start = obs.t
        self._now = max(self._now, obs.t)
        self._seen += 1
        if self.agrees(obs):
            if self._run == 0:
                self._run_blinks = obs.blinks
            self._run += 1
            self._mismatch = 0
            self._problem = ""
            if self._run_blinks is not None and obs.blinks > self._run_blinks:
                self._blinked = True
        else:
            self._run, self._run_blinks, self._blinked = 0, None, False
            if obs.faces == 0:
                self._problem = NO_FACE
            elif obs.faces > 1:
                self._problem = SEVERAL_FACES
            else:
                self._problem = NOT_HOLDER
                self._mismatch += 1
            if obs.faces != 1:
                self._mismatch = 0
            if self._mismatch >= self.params.mismatch_frames:
                self._finish(FAILED, NOT_HOLDER)
                return self.progress
        if self._run >= self.params.frames:
            if self._blinked or not self.params.require_blink:
                self._finish(PASSED, "")
                return self.progress
            self._problem = NO_BLINK  # the face agrees; waiting for a blink
        return self.tick(obs.t)

    def tick(self, t: float) -> Progress:
        """Advance the clock without a frame; fails the check once `timeout_s` has passed since the first frame."""
        if self._state == PENDING:
            if self._start is None:
                self._start = t
            self._now = max(self._now, t)
            if self._now - self._start >= self.params.timeout_s:
                self._finish(FAILED, self._problem if self._problem else TIMED_OUT)
        return self.progress

    def cancel(self) -> Progress:
        if self._state == PENDING:
            self._finish(FAILED, CANCELLED)
        return self.progress

    def _finish(self, state: str, reason: str) -> None:
        self._state, self._reason = state, reason

    @property
    def progress(self) -> Progress:
        elapsed = 0.0 if self._start is None else self._now - self._start
        reason = self._reason if self._state != PENDING else self._problem
        return Progress(
            state=self._state,
            reason=reason,
            agreeing=min(self._run, self.params.frames),
            needed=self.params.frames,
            blinked=self._blinked,
            elapsed_s=elapsed,
            remaining_s=max(0.0, self.params.timeout_s - elapsed),
            frames_seen=self._seen,
        )
