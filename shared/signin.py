"""Sign-in failure reasons, and the face check's own settings, once for the recognizer (face check), the edge
(sign-in flow) and the dashboard.

Each code has a sentence for people. `NOT_COUNTED` are outcomes that are not the person's failure (the check
was cancelled, the recognizer was offline, the request itself was malformed): the edge neither counts them
towards its throttle nor reports them. The dashboard accepts every code here, so no reason one part can send
is refused by another.

`VERIFY_FRAMES` and `VERIFY_TIMEOUT` are the face check's length and time limit, declared here (the lowest layer
both programs share): the edge asks for them (`--verify-frames`, `--verify-timeout`, fields of `EdgeConfig`), the
recognizer checks what it is asked (`VerifyParams`), both against these bounds.
"""
from __future__ import annotations

from shared.config import Setting

WRONG_PASSWORD = "wrong_password"
NO_FACE = "no_face"
SEVERAL_FACES = "several_faces"
NOT_HOLDER = "not_account_holder"
NO_BLINK = "no_blink"
TIMED_OUT = "timed_out"
NOT_ENROLLED = "not_enrolled"
CANCELLED = "cancelled"
OFFLINE = "offline"
BAD_REQUEST = "bad_request"

REASONS = {
    WRONG_PASSWORD: "wrong user name or password",
    NO_FACE: "no face in front of the camera",
    SEVERAL_FACES: "several faces in front of the camera; only the account holder may be in view",
    NOT_HOLDER: "not the account holder",
    NO_BLINK: "no blink seen (liveness check failed; a photo or a screen is refused)",
    TIMED_OUT: "timed out before the face check was complete",
    NOT_ENROLLED: "this account's identity has no enrolled face; ask an admin to enrol it",
    CANCELLED: "the face check was cancelled",
    OFFLINE: "the recognizer is offline; the face check could not run",
    BAD_REQUEST: "the face check request was malformed",
}
NOT_COUNTED = frozenset({CANCELLED, OFFLINE, BAD_REQUEST})
FAILURE_REASONS = tuple(REASONS)


def describe(reason: str) -> str:
    """A sentence for a reason code (the code itself when unknown)."""
    return REASONS.get(reason, reason)


VERIFY_FRAMES = Setting("--verify-frames", 10, "consecutive agreeing frames the sign-in face check needs", int, ge=1,
                        le=300)
VERIFY_TIMEOUT = Setting("--verify-timeout", 20.0, "seconds the sign-in face check may take", float, ge=1, le=600)
