"""One admitted station's session, without sockets or threads: messages in, actions out (as `edge/link_state.py`).

`StationSession.receive(message)` takes each message the station sent after WELCOME, in order, and returns what to do
about it, in order: `Send` a message back, tell the observers a frame was processed (`FrameProcessed`, before its
RESULT is sent) or the camera state changed (`CameraChanged`), or ask the server to enrol a face (`Enrol`: the
trust policy may ask the dashboard, so it is the shell's work). It raises `protocol.ProtocolError` for a message a
station must not send. Frames are run by the station's own `StationPipeline` (or its sign-in check, while one runs).

What the server knows of the station is `snapshot`, a frozen `StationSnapshot` replaced after every message, so
other threads (the status reporter) read it without a lock. Clocks are passed in: a test drives time itself.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from typing import Callable, Optional, Protocol, Union

from recognizer.station.pipeline import StationPipeline
from recognizer.station.signin import SigninChecks
from recognizer.station.types import FrameOutcome, StationSnapshot
from recognizer.vision.imageio import BadImage
from shared import protocol
from shared.lognames import who
from shared.names import InvalidName, validate_login
from shared.protocol import Message, MessageKind
from shared.results import faces_to_wire

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Send:
    """Send `message` to the station."""

    message: Message


@dataclass(frozen=True)
class FrameProcessed:
    """A frame was processed: tell the frame observers (alerts) before the RESULT that follows is sent."""

    snapshot: StationSnapshot
    outcome: FrameOutcome
    jpeg: bytes
    cpu_s: float  # the frame's CPU time on this thread (the server's pacing measures its capacity with it)


@dataclass(frozen=True)
class CameraChanged:
    """The station's camera went lost or came back (`snapshot.camera`): tell the camera observers."""

    snapshot: StationSnapshot


@dataclass(frozen=True)
class Enrol:
    """An ENROL from the station: the server checks the right to enrol and answers with ENROL_RESULT."""

    message: Message


Action = Union[Send, FrameProcessed, CameraChanged, Enrol]


class LogLimit(Protocol):
    """Rate-limited logging by key (recognizer.server.gate.LogLimiter): a flood of bad frames is not a flood of log."""

    def log(self, logger: logging.Logger, level: int, key: str, fmt: str, *args: object) -> None: ...


class StationSession:
    """The state of one admitted station between WELCOME and its last message. Not thread-safe: one reader."""

    def __init__(self, hello: StationSnapshot, pipeline: StationPipeline, limiter: Optional[LogLimit] = None,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time,
                 cpu: Callable[[], float] = time.thread_time, rate: Callable[[], float] = lambda: 0.0,
                 alerts: Callable[[], str] = lambda: "ok") -> None:
        """`rate`: the frames/s this station may send (told in every RESULT; 0: not said); `alerts`: what the
        alert outbox can do (shared.alerts.OUTBOX_STATES; told in heartbeats when not "ok"). Both only read state."""
        self.snapshot = hello
        self._cpu, self._rate, self._alerts = cpu, rate, alerts
        self.pipeline = pipeline
        self.checks = SigninChecks(pipeline, hello.station, clock)  # sign-in face checks (VERIFY)
        self._limiter = limiter
        self._clock, self._wall = clock, wall
        self._last_frame_t: Optional[float] = None  # clock time of the last answered frame

    def _set(self, **changes: object) -> StationSnapshot:
        self.snapshot = replace(self.snapshot, **changes)
        return self.snapshot

    def receive(self, msg: Message) -> list[Action]:
        """The actions one message from the station calls for, in order."""
        self._set(last_seen=self._wall())
        if msg.kind == MessageKind.FRAME:
            return self._on_verify_frame(msg) if self.checks.active else self._on_frame(msg)
        if msg.kind == MessageKind.VERIFY:
            return [Send(reply) for reply in self.checks.on_verify(msg)]
        if msg.kind == MessageKind.HEARTBEAT:
            alerts = self._alerts()
            out: list[Action] = [Send(protocol.heartbeat(msg.get("ts", (int, float), 0.0),
                                                         alerts=None if alerts == "ok" else alerts))]
            camera = msg.get("camera", str, "")
            if camera in protocol.CAMERA_STATES:
                out += self._camera_report(camera, msg.get("camera_error", str, ""),
                                           float(msg.get("camera_lost_s", (int, float), 0.0)))
            return out
        if msg.kind == MessageKind.ENROL:
            return [Enrol(msg)]
        if msg.kind == MessageKind.SESSION:
            try:
                login = validate_login(msg.get("login", str))
            except InvalidName as exc:
                raise protocol.MalformedMessage(f"SESSION: {exc}") from None
            self._set(login=login)
            log.info("station %s: login is now %s", self.snapshot.station, who(login))
            return []
        raise protocol.MalformedMessage(f"unexpected {msg.kind.name} message from a station")

    def _camera_report(self, state: str, error: str, lost_s: float) -> list[Action]:
        """The edge says its camera is ok or lost; on a change, frames/s restarts and the camera observers hear it."""
        s = self.snapshot
        if state == s.camera:
            self._set(camera_error=error)
            return []
        now, previous = self._wall(), s.camera
        since = now - max(0.0, min(lost_s, 86400.0)) if state == "lost" else now
        if state == "lost":
            self._last_frame_t = None  # no frames: a rate from before the loss would be stale
            s = self._set(camera=state, camera_error=error, camera_since=since, fps=0.0)
            log.warning("station %s: camera lost %.1f s ago%s", s.station, now - since, f" ({error})" if error else "")
        else:
            s = self._set(camera=state, camera_error=error, camera_since=since)
            log.info("station %s: camera %s", s.station, "back" if previous == "lost" else "ok")
        return [CameraChanged(s)]

    def _on_verify_frame(self, msg: Message) -> list[Action]:
        """A frame during a sign-in check: answered by the check, counted here."""
        answer = self.checks.on_frame(msg)
        if answer.ok:
            self._set(frames=self.snapshot.frames + 1)
        else:
            self._set(errors=self.snapshot.errors + 1)
        return [Send(reply) for reply in answer.messages]

    def _on_frame(self, msg: Message) -> list[Action]:
        out: list[Action] = []
        if self.snapshot.camera == "lost":  # a frame is the surest sign the camera is back
            out += self._camera_report("ok", "", 0.0)
        s = self.snapshot
        seq = msg.get("seq", int)
        ts = msg.get("ts", (int, float), 0.0)
        try:
            cpu0 = self._cpu()
            outcome = self.pipeline.process(msg.payload, annotate=s.annotate)
            cpu_s = self._cpu() - cpu0
        except BadImage as exc:
            self._set(errors=s.errors + 1)
            if self._limiter is not None:
                self._limiter.log(log, logging.INFO, f"frame {s.station}", "station %s frame %d: %s", s.station, seq, exc)
            return out + [Send(protocol.result(seq, ts, [], error=f"bad_image: {exc}"))]
        except Exception:  # a bug on one frame must not take the station down; it is logged with its trace
            self._set(errors=s.errors + 1)
            log.exception("station %s frame %d: internal error", s.station, seq)
            return out + [Send(protocol.result(seq, ts, [], error="internal_error"))]
        now = self._clock()
        fps = s.fps
        if self._last_frame_t is not None:  # frames/s as an exponential moving average over ~10 frames
            rate = 1.0 / max(now - self._last_frame_t, 1e-3)
            fps = 0.9 * fps + 0.1 * rate if fps else rate
        self._last_frame_t = now
        s = self._set(fps=fps, last_frame_at=self._wall(), frames=s.frames + 1, faces=tuple(outcome.faces))
        return out + [
            FrameProcessed(s, outcome, msg.payload, cpu_s),
            Send(protocol.result(seq, ts, faces_to_wire(outcome.faces), outcome.annotated, timings=outcome.timings_ms,
                                 max_fps=self._rate())),
        ]
