"""The sign-in face check (VERIFY): a station's frames compared with one claimed identity until it is decided.

While a check runs, every frame of the station goes here instead of the identity voting: each is decoded,
detected, encoded and measured for liveness by the station's own `StationPipeline` steps, compared with the
claimed identity only, and judged by the pure `recognizer.station.verify.Verifier`. No I/O: `SigninChecks` takes
the station's VERIFY and FRAME messages and returns the messages to send back (docs/protocol.md, Sign-in).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

from recognizer.liveness.blinks import FaceLiveness, LivenessParams
from recognizer.station.verify import Observation, Verifier, VerifyParams
from recognizer.vision.imageio import BadImage
from recognizer.station.pipeline import Liveness, StationPipeline
from shared import protocol
from shared.names import InvalidName, validate_name
from shared.protocol import Message
from shared.results import KNOWN, PENDING, FaceResult
from shared.signin import BAD_REQUEST

log = logging.getLogger(__name__)


def default_liveness() -> Liveness:
    """Blink liveness with the product's defaults (a pipeline built without the recognizer's settings)."""
    return FaceLiveness(LivenessParams())


@dataclass
class VerifyRun:
    """A station's sign-in face check: the pure verifier plus the liveness track id it uses."""

    request_id: str
    verifier: Verifier
    track_id: int  # negative, so it never meets a tracker id in the station's liveness state
    liveness: Liveness


def verify_observation(pipeline: StationPipeline, run: VerifyRun, jpeg: bytes,
                       now: float) -> tuple[Observation, list[FaceResult], bytes]:
    """Detect, encode and measure one frame against the claimed identity; returns the observation, faces, JPEG.
    Detection runs on the full frame (not `detect_scale`); liveness only when exactly one face is in view."""
    bgr, rgb = pipeline.decode(jpeg)
    boxes = pipeline.detect(rgb, scale=1.0)
    identity = run.verifier.identity
    distance = other = float("inf")
    blinks = 0
    liveness = "unknown"
    if len(boxes) == 1:
        scores = pipeline.scores(pipeline.encode(rgb, boxes))
        for name, d in zip(scores.people, scores.distance[0]):
            if name == identity:
                distance = float(d)
            else:
                other = min(other, float(d))
        result = pipeline.liveness_of(bgr, [(run.track_id, boxes[0])], now, run.liveness)[run.track_id]
        blinks, liveness = result.blinks, result.state.value
    observation = Observation(now, len(boxes), distance, other, blinks)
    agrees = run.verifier.agrees(observation)
    faces = [FaceResult(
        box=tuple(b), track=run.track_id, state=KNOWN if agrees else PENDING, name=identity if agrees else None,
        distance=None if distance == float("inf") else round(distance, 4),
        confidence=0.0, liveness=liveness, blinks=blinks,
    ) for b in boxes]
    return observation, faces, pipeline.annotate(bgr, faces)


@dataclass
class FrameAnswer:
    """What a frame during a check gives: the messages to send, in order, and whether the frame was processed."""

    messages: list[Message]
    ok: bool


class SigninChecks:
    """The sign-in face checks of one station session: at most one at a time; a new VERIFY replaces the last."""

    def __init__(self, pipeline: StationPipeline, station: str, clock: Callable[[], float]) -> None:
        self.pipeline = pipeline
        self.station = station
        self.clock = clock  # monotonic seconds, for the verifier's timeout and liveness
        self.run: VerifyRun | None = None
        self._runs = 0

    @property
    def active(self) -> bool:
        """A check is in progress: the station's frames belong to it."""
        return self.run is not None

    def on_verify(self, msg: Message) -> list[Message]:
        """Start (or cancel) a check; the answers to send now (a VERIFY_RESULT when it is decided at once)."""
        request_id = msg.get("request_id", str)
        if msg.get("cancel", bool, False):
            run = self.run
            if run is not None and run.request_id == request_id:
                return [self._end(run, run.verifier.cancel().to_dict())]
            return []
        identity = msg.get("identity", str)
        frames = msg.get("frames", int)
        timeout_s = msg.get("timeout_s", (int, float))
        match = self.pipeline.match_params
        try:
            identity = validate_name(identity, "identity")
            params = VerifyParams(frames=frames, timeout_s=float(timeout_s),
                                  accept_distance=match.accept_distance, margin=match.margin)
        except (InvalidName, ValueError) as exc:
            return [protocol.verify_result(request_id, {"state": "failed", "reason": BAD_REQUEST, "message": str(exc)})]
        enrolled = self.pipeline.is_enrolled(identity)
        if self.run is not None:
            self.run.verifier.cancel()
        self._runs += 1
        # the station's own liveness (its method and thresholds); a recognizer run with liveness off still checks
        # blinks at sign-in, with its liveness settings (the pipeline's `signin_liveness`)
        liveness = self.pipeline.liveness
        if liveness is None:
            liveness = (self.pipeline.signin_liveness or default_liveness)()
        run = VerifyRun(request_id, Verifier(identity, params, enrolled=enrolled), -self._runs, liveness)
        log.info("station %s: sign-in face check %s for %r (%d frames, %.0f s)%s", self.station, request_id,
                 identity, frames, timeout_s, "" if enrolled else ": not enrolled")
        if run.verifier.progress.done:
            return [protocol.verify_result(request_id, run.verifier.progress.to_dict())]
        self.run = run
        return []

    def on_frame(self, msg: Message) -> FrameAnswer:
        """A FRAME during a check: its RESULT (with the progress), then the check's VERIFY_RESULT."""
        run = self.run
        assert run is not None
        seq = msg.get("seq", int)
        ts = msg.get("ts", (int, float), 0.0)
        try:
            observation, faces, annotated = verify_observation(self.pipeline, run, msg.payload, self.clock())
        except BadImage as exc:
            return FrameAnswer([protocol.result(seq, ts, [], error=f"bad_image: {exc}")], False)
        except Exception:  # a bug on one frame must not take the station down; logged with its trace
            log.exception("station %s frame %d (sign-in check): internal error", self.station, seq)
            return FrameAnswer([protocol.result(seq, ts, [], error="internal_error")], False)
        progress = run.verifier.observe(observation).to_dict()
        out = [protocol.result(seq, ts, [f.to_wire() for f in faces], annotated, verify=progress)]
        if progress["state"] != "pending":
            out.append(self._end(run, progress))
        else:
            out.append(protocol.verify_result(run.request_id, progress))
        return FrameAnswer(out, True)

    def _end(self, run: VerifyRun, progress: dict) -> Message:
        self.run = None
        run.liveness.forget(run.track_id)
        log.info("station %s: sign-in face check %s %s%s", self.station, run.request_id, progress["state"],
                 f" ({progress['reason']})" if progress.get("reason") else "")
        return protocol.verify_result(run.request_id, progress)
