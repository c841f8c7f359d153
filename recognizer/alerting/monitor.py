"""The alert monitor: the server's station observer. It keeps one `AlertEngine` per station session, feeds it every
processed frame and camera report, closes a session's incidents when the server says the session ended, and hands
the events to `emit` (the outbox). The rules themselves are pure, in `recognizer.alerting.rules`. The evidence it
gives them is an `Evidence` (`bystanders.py`), rendered with the bystanders blurred when an event is sent."""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace
from typing import Callable, Optional

from recognizer.alerting.bystanders import Evidence
from recognizer.alerting.rules import AlertEngine, AlertThresholds, FrameStats
from recognizer.station.types import FrameOutcome, StationSnapshot
from shared.alert_wire import AlertEvent
from shared.lognames import who

log = logging.getLogger(__name__)


def frame_stats(jpeg: bytes) -> Optional[FrameStats]:
    """Luminance mean/std and a 16x16 thumbnail of a JPEG, decoded at 1/8 size (about 0.4 ms for VGA); None if
    undecodable. (The server uses the pipeline's own 1/8 grey thumbnail instead: `stats_of_thumb`.)"""
    import cv2
    import numpy as np

    gray = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_REDUCED_GRAYSCALE_8)
    if gray is None or gray.size == 0:
        return None
    return stats_of_thumb(gray)


def stats_of_thumb(gray8) -> FrameStats:
    """`frame_stats` of a frame from its grey picture reduced 8 times (8x8 block means, as a JPEG decoded at 1/8)."""
    import cv2

    mean, std = cv2.meanStdDev(gray8)
    thumb = cv2.resize(gray8, (16, 16), interpolation=cv2.INTER_AREA)
    return FrameStats(float(mean[0][0]), float(std[0][0]), thumb.tobytes())


class AlertMonitor:
    """The server's station observer: one `AlertEngine` per station session; events go to `emit` (the outbox).

    `on_frame` runs in each station's thread, so it only computes frame statistics and hands events on;
    `emit` must be fast (an SQLite insert). Sessions are keyed by their snapshot's `session` number, so a
    station that reconnects starts a fresh engine. The server calls
    `on_disconnect` when a session ends, which closes that session's incidents at once.
    """

    def __init__(self, thresholds: AlertThresholds, emit: Callable[[AlertEvent], None],
                 clock: Optional[Callable[[], float]] = None, blur_bystanders: bool = True) -> None:
        self.thresholds = thresholds
        self.blur_bystanders = blur_bystanders  # faces an alert is not about are blurred in its stored evidence
        self._emit = emit
        self._clock = clock or time.time
        self._engines: dict[int, AlertEngine] = {}
        self._last_frame: dict[int, Evidence] = {}
        self._lock = threading.Lock()

    def stop(self, reason: str = "recognizer_stopped") -> None:
        """Close every open incident (the recognizer stops)."""
        with self._lock:
            engines, self._engines = list(self._engines.values()), {}
            self._last_frame.clear()
        for engine in engines:
            self._send(engine.close_all(self._clock(), reason))

    def _engine(self, status: StationSnapshot) -> AlertEngine:
        with self._lock:
            engine = self._engines.get(status.session)
            if engine is None:
                engine = self._engines[status.session] = AlertEngine(status.station, self.thresholds)
            return engine

    def on_frame(self, status: StationSnapshot, outcome: FrameOutcome, raw_jpeg: bytes) -> None:
        """A processed frame (its station, outcome and raw JPEG) → events emitted."""
        stats = None
        if "camera_tamper" in self.thresholds.enabled:  # the pipeline's thumbnail, else the JPEG decoded at 1/8
            thumb = getattr(outcome, "thumb", None)
            stats = stats_of_thumb(thumb) if thumb is not None else frame_stats(raw_jpeg)
        faces = tuple(outcome.faces)
        # the annotated frame as the live feed shows it: the reply's, or drawn only if it becomes evidence (an edge
        # that draws its own boxes gets RESULTs without a picture; outcome.evidence makes it then)
        annotated = outcome.annotated or getattr(outcome, "evidence", b"")
        evidence = Evidence(raw_jpeg, annotated, faces, status.login, self.blur_bystanders)
        with self._lock:  # the last picture, as it came: evidence if the camera is lost next
            self._last_frame[status.session] = Evidence(raw_jpeg, raw_jpeg, faces, status.login, self.blur_bystanders)
        events = self._engine(status).observe(self._clock(), faces, status.login, stats, evidence)
        self._send(events)

    def on_camera(self, status: StationSnapshot) -> None:
        """CameraObserver: the station's camera went lost or came back (status.camera) → camera_tamper events."""
        lost = status.camera == "lost"
        details = {"error": status.camera_error} if lost and status.camera_error else {}
        with self._lock:
            evidence = self._last_frame.get(status.session) if lost else None
        since = status.camera_since if lost and status.camera_since else None
        events = self._engine(status).camera_state(self._clock(), lost, status.login, details, evidence, since)
        self._send(events)

    def on_disconnect(self, status: StationSnapshot, reason: str = "station_disconnected") -> None:
        """The station's session ended (the server says so as it closes): close its open incidents now, with
        `closed_by` `reason` (station_disconnected, or recognizer_stopped when the server is stopping)."""
        with self._lock:
            self._last_frame.pop(status.session, None)
            engine = self._engines.pop(status.session, None)
        if engine is not None:
            log.info("station %s: session ended; closing its incidents", status.station)
            self._send(engine.close_all(self._clock(), reason))

    def _send(self, events: list[AlertEvent]) -> None:
        for ev in events:
            ev = _rendered(ev)
            # the people named (login, expected, names) only as pseudonyms unless FACEMON_LOG_NAMES=1
            log.info("alert %s %s station=%s login=%s alert_id=%s details=%s",
                     ev.type, ev.state, ev.station_id, who(ev.login_name), ev.alert_id, _unnamed(ev.details))
            self._emit(ev)


def _unnamed(details: dict) -> dict:
    """`details` with the names of people in it replaced by pseudonyms (for the log line only)."""
    out = {k: v for k, v in details.items() if k != "face"}  # an unknown face's crop: no image data in the log
    for key in ("expected", "login", "seen", "identity"):
        if isinstance(out.get(key), str):
            out[key] = who(out[key])
    if isinstance(out.get("names"), list):
        out["names"] = [n if n == "unknown" else who(n) for n in out["names"]]
    return out


def _rendered(ev: AlertEvent) -> AlertEvent:
    """`ev` with its evidence rendered for its type (bystanders blurred), as the JPEG bytes the outbox stores."""
    image = ev.image.render(ev.type) if isinstance(ev.image, Evidence) else ev.image
    best = ev.best_image.render(ev.type) if isinstance(ev.best_image, Evidence) else ev.best_image
    return ev if image is ev.image and best is ev.best_image else replace(ev, image=image, best_image=best)
