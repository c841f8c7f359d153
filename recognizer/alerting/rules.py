"""Alert rules: per-station incidents (open → update → closed) from per-frame face results. Pure logic.

An `AlertEngine` is fed one frame at a time — time in seconds, the pipeline's `FaceResult`s, the
logged-in evaluator and cheap frame statistics — and returns `AlertEvent`s. Each alert type is one
incident at a time per station: it opens once the condition has held for its threshold, may be
updated with better evidence (at most every `update_every_s`), closes when the condition has been
absent for `clear_after_s` (hysteresis), and cannot reopen before `cooldown_s` has passed. So a
stranger standing at a desk for ten minutes is one alert, not 9 000.

The evidence is opaque to the engine (the caller passes the annotated JPEG); nothing here touches
images, sockets or files (the frame statistics for the tamper rule come from `recognizer.alerting.monitor`).
"""
from __future__ import annotations

import base64
import logging
import uuid
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

log = logging.getLogger(__name__)

from recognizer.settings import check_section
from shared.alert_wire import AlertEvent
from shared.alerts import RECOGNIZER_ALERT_TYPES as ALERT_TYPES
from shared.results import KNOWN, UNKNOWN, FaceResult


@dataclass(frozen=True)
class AlertThresholds:
    """When each rule opens and closes. Times in seconds; luminance on the 0..255 grey scale.

    `*_after_s`: how long a condition must hold before its incident opens. `gap_s`: a condition missing
    for up to this long (a face the detector lost for a frame) does not restart that wait.
    `clear_after_s`: how long a condition must be absent before its incident closes. `cooldown_s`: after
    a close, no new incident of that type on that station for this long. `update_every_s`: at most one
    better-evidence update per incident this often. `no_blink_after_s` comes on top of the liveness
    timeouts (a reader may not blink for 15 s, which liveness already allows for).
    """

    unknown_after_s: float = 3.0
    wrong_person_after_s: float = 3.0
    multiple_after_s: float = 5.0
    no_face_after_s: float = 30.0
    no_blink_after_s: float = 5.0
    eyes_closed_after_s: float = 10.0  # on top of liveness' long_closure_s (2 s): reading looks down, not asleep
    tamper_after_s: float = 3.0
    frozen_after_s: float = 10.0
    gap_s: float = 1.5
    clear_after_s: float = 3.0
    cooldown_s: float = 60.0
    update_every_s: float = 5.0
    update_gain: float = 1.2  # a best frame replaces the last one sent only when its score is this much higher
    black_mean: float = 12.0  # mean luminance below this: black frame
    covered_std: float = 5.0  # luminance standard deviation below this: lens covered (flat picture)
    enabled: frozenset = frozenset(ALERT_TYPES)

    def __post_init__(self) -> None:
        check_section(self, "alerts")  # the waits a flag sets (--unknown-after ...): their bounds
        for name in ("tamper_after_s", "frozen_after_s", "gap_s", "clear_after_s", "update_every_s"):  # no flag
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value <= 86400:
                raise ValueError(f"alert threshold {name} must be 0..86400 seconds, got {value!r}")
        if self.update_gain < 1.0:
            raise ValueError(f"update_gain must be >= 1, got {self.update_gain}")
        if not 0 <= self.black_mean <= 255 or not 0 <= self.covered_std <= 128:
            raise ValueError("black_mean must be 0..255 and covered_std 0..128")
        unknown = set(self.enabled) - set(ALERT_TYPES)
        if unknown:
            raise ValueError(f"unknown alert type(s) {sorted(unknown)}; valid: {', '.join(ALERT_TYPES)}")
        object.__setattr__(self, "enabled", frozenset(self.enabled))


@dataclass(frozen=True)
class FrameStats:
    """Cheap statistics of the raw frame: mean and standard deviation of luminance, a 16x16 grey thumbnail."""

    mean: float
    std: float
    thumb: bytes = b""


@dataclass
class _Incident:
    alert_id: str
    started_at: float
    login: str
    details: dict
    best_score: float
    best_frame: Optional[bytes]
    sent_score: float
    last_event_t: float
    dirty: bool = False


@dataclass
class _Rule:
    """Open/update/close bookkeeping of one alert type on one station."""

    type: str
    open_after_s: float
    since: Optional[float] = None  # start of the current run of the condition
    last_true: Optional[float] = None
    incident: Optional[_Incident] = None
    cooldown_until: float = float("-inf")
    detail_merge: Callable[[dict, dict], dict] = field(default=lambda old, new: {**old, **new})


def review_face(faces: Sequence[FaceResult]) -> dict:
    """`{"face": {track, verdict, vector, crop, distance}}` of the largest face that carries its encoding and crop
    (base64), for the dashboard's review queue; {} when none does. One face per event keeps details small."""
    with_review = [f for f in faces if f.review is not None]
    if not with_review:
        return {}
    f = max(with_review, key=lambda f: f.area)
    vector, crop = f.review
    return {"face": {"track": f.track, "verdict": f.state, "vector": base64.b64encode(vector).decode(),
                     "crop": base64.b64encode(crop).decode(), "distance": f.distance, "candidate": f.candidate}}


def _merge_max(old: dict, new: dict) -> dict:
    out = {**old, **new}
    for key in ("faces", "max_faces"):
        if key in old and key in new:
            out[key] = max(old[key], new[key])
    for key in ("names", "tracks", "reasons"):
        if key in old or key in new:
            out[key] = sorted(set(old.get(key, [])) | set(new.get(key, [])), key=str)[:20]
    return out


class AlertEngine:
    """The alert rules of one station session. Feed `observe()` every processed frame, in time order."""

    def __init__(self, station_id: str, thresholds: AlertThresholds = AlertThresholds(),
                 new_id: Callable[[], str] = lambda: uuid.uuid4().hex) -> None:
        self.station_id = station_id
        self.th = thresholds
        self._new_id = new_id
        th = thresholds
        self._rules = {
            "unknown_face": _Rule("unknown_face", th.unknown_after_s, detail_merge=_merge_max),
            "wrong_person": _Rule("wrong_person", th.wrong_person_after_s, detail_merge=_merge_max),
            "multiple_faces": _Rule("multiple_faces", th.multiple_after_s, detail_merge=_merge_max),
            "no_face": _Rule("no_face", th.no_face_after_s),
            "no_blink": _Rule("no_blink", th.no_blink_after_s, detail_merge=_merge_max),
            "eyes_closed": _Rule("eyes_closed", th.eyes_closed_after_s, detail_merge=_merge_max),
            "camera_tamper": _Rule("camera_tamper", th.tamper_after_s, detail_merge=_merge_max),
        }
        self._last_thumb: bytes = b""
        self._frozen_since: Optional[float] = None
        self._camera_lost = False  # the edge said its camera is lost (camera_state)

    def open_incidents(self) -> dict[str, str]:
        """Alert type → alert id of the incidents open now."""
        return {k: r.incident.alert_id for k, r in self._rules.items() if r.incident is not None}

    # -- the conditions (pure functions of one frame) --
    def _conditions(self, t: float, faces: Sequence[FaceResult], login: str,
                    stats: Optional[FrameStats]) -> dict[str, Optional[tuple[float, dict]]]:
        """Alert type → (evidence score, details) when the condition holds on this frame, None when it does not.

        A type missing from the result is undecidable on this frame (no frame statistics) and keeps its state.
        """
        out: dict[str, Optional[tuple[float, dict]]] = {}
        unknown = [f for f in faces if f.state == UNKNOWN]
        out["unknown_face"] = (max(f.area for f in unknown), {
            "faces": len(unknown), "tracks": [f.track for f in unknown],
            "distance": min((f.distance for f in unknown if f.distance is not None), default=None),
            **review_face(unknown),
        }) if unknown else None

        known = [f for f in faces if f.state == KNOWN and f.name]
        names = {f.name for f in known}
        others = [f for f in known if f.name != login]
        if login and others and login not in names:
            out["wrong_person"] = (max(f.area * max(float(f.confidence or 0.0), 0.01) for f in others),
                                   {"names": sorted({f.name for f in others}), "expected": login,
                                    "distance": min((f.distance for f in others if f.distance is not None), default=None)})
        else:
            out["wrong_person"] = None

        out["multiple_faces"] = (float(len(faces)), {"faces": len(faces), "max_faces": len(faces)}) if len(faces) > 1 else None

        spoof = [f for f in faces if f.liveness == "no_blink"]
        out["no_blink"] = (max(f.area for f in spoof), {
            "tracks": [f.track for f in spoof], "names": sorted({f.name or "unknown" for f in spoof}),
        }) if spoof else None

        asleep = [f for f in faces if f.liveness == "eyes_closed"]
        out["eyes_closed"] = (max(f.area for f in asleep), {
            "tracks": [f.track for f in asleep], "names": sorted({f.name or "unknown" for f in asleep}),
        }) if asleep else None

        tamper: Optional[tuple[float, dict]] = None
        if stats is not None:
            if stats.thumb and stats.thumb == self._last_thumb:
                self._frozen_since = self._frozen_since if self._frozen_since is not None else t
            else:
                self._frozen_since = None
            self._last_thumb = stats.thumb
            reason = None
            if stats.mean < self.th.black_mean:
                reason = "black"
            elif stats.std < self.th.covered_std:
                reason = "covered"
            elif self._frozen_since is not None and t - self._frozen_since >= self.th.frozen_after_s - self.th.tamper_after_s:
                reason = "frozen"  # opens frozen_after_s after the picture stopped changing
            if reason:
                tamper = (0.0, {"reason": reason, "reasons": [reason], "mean": round(stats.mean, 1), "std": round(stats.std, 1)})
            out["camera_tamper"] = tamper
        tampered = tamper is not None or self._rules["camera_tamper"].incident is not None
        # an empty desk seen through a black or covered camera is the tamper incident, not a second one
        out["no_face"] = (0.0, {"after_s": self.th.no_face_after_s}) if not faces and not tampered else None
        return out

    # -- the incident state machine --
    def observe(self, t: float, faces: Sequence[FaceResult], login: str = "", stats: Optional[FrameStats] = None,
                evidence: Optional[bytes] = None) -> list[AlertEvent]:
        """Advance every rule by one frame at time `t` (seconds); return the events this frame caused."""
        events: list[AlertEvent] = []
        for kind, cond in self._conditions(t, faces, login, stats).items():
            if kind not in self.th.enabled:
                continue
            events.extend(self._step(self._rules[kind], t, cond, login, evidence))
        return events

    def _step(self, rule: _Rule, t: float, cond: Optional[tuple[float, dict]], login: str, evidence: Optional[bytes]) -> list[AlertEvent]:
        th = self.th
        if cond is not None:
            if rule.since is None or rule.last_true is None or t - rule.last_true > th.gap_s:
                rule.since = t
            rule.last_true = t
        inc = rule.incident
        if inc is None:
            if cond is not None and rule.since is not None and t - rule.since >= rule.open_after_s and t >= rule.cooldown_until:
                score, details = cond
                inc = _Incident(self._new_id(), rule.since, login, dict(details), score, evidence, score, t)
                rule.incident = inc
                log.debug("station %s: %s opens", self.station_id, rule.type)
                return [self._event(rule, inc, "open", None, dict(inc.details), image=evidence)]
            return []
        if cond is not None:
            score, details = cond
            inc.details = rule.detail_merge(inc.details, details)
            if score > inc.best_score:
                inc.best_score, inc.best_frame = score, evidence
                inc.dirty = inc.best_score > inc.sent_score * th.update_gain or inc.sent_score <= 0 < inc.best_score
            if inc.dirty and t - inc.last_event_t >= th.update_every_s:
                inc.dirty, inc.sent_score, inc.last_event_t = False, inc.best_score, t
                return [self._event(rule, inc, "update", None, dict(inc.details), best=inc.best_frame)]
            return []
        assert rule.last_true is not None
        if t - rule.last_true >= th.clear_after_s:
            return [self._close(rule, rule.last_true, t, {})]
        return []

    def _close(self, rule: _Rule, ended_at: float, t: float, extra: dict) -> AlertEvent:
        inc = rule.incident
        assert inc is not None
        rule.incident, rule.since = None, None
        rule.cooldown_until = t + self.th.cooldown_s
        details = {**inc.details, "duration_s": round(max(0.0, ended_at - inc.started_at), 1), **extra}
        log.debug("station %s: %s closes", self.station_id, rule.type)
        return self._event(rule, inc, "closed", ended_at, details, best=inc.best_frame if inc.dirty else None)

    def camera_state(self, t: float, lost: bool, login: str = "", details: Optional[dict] = None,
                     evidence: Optional[bytes] = None, since: Optional[float] = None) -> list[AlertEvent]:
        """The edge reports its camera lost (no frame for a few seconds) or back: a `camera_tamper`
        incident with reason `camera_lost` opens at once (the edge already waited), and closes when the
        camera is back. `since`: when the last camera frame came (the incident's start)."""
        rule = self._rules["camera_tamper"]
        if "camera_tamper" not in self.th.enabled:
            return []
        if lost:
            self._camera_lost = True
            rule.since = rule.last_true = t
            extra = {"reason": "camera_lost", "reasons": ["camera_lost"], **(details or {})}
            if rule.incident is not None:  # already open (black/covered/frozen): add the reason
                rule.incident.details = _merge_max(rule.incident.details, extra)
                return []
            if t < rule.cooldown_until:
                return []
            started = min(t, since) if since is not None else t
            inc = _Incident(self._new_id(), started, login, extra, 0.0, evidence, 0.0, t)
            rule.incident = inc
            return [self._event(rule, inc, "open", None, dict(inc.details), image=evidence)]
        if not self._camera_lost:
            return []
        self._camera_lost = False
        inc = rule.incident
        if inc is not None and "camera_lost" in inc.details.get("reasons", ()):
            return [self._close(rule, t, t, {"closed_by": "camera_back"})]
        return []

    def close_all(self, t: float, reason: str = "station_disconnected") -> list[AlertEvent]:
        """Close every open incident now (the station went away); the rules start afresh."""
        events = []
        for rule in self._rules.values():
            if rule.incident is not None:
                events.append(self._close(rule, t, t, {"closed_by": reason}))
            rule.since = rule.last_true = None
        self._frozen_since, self._last_thumb, self._camera_lost = None, b"", False
        return events

    def _event(self, rule: _Rule, inc: _Incident, state: str, ended_at: Optional[float], details: dict,
               image: Optional[bytes] = None, best: Optional[bytes] = None) -> AlertEvent:
        if state == "closed":
            details.pop("face", None)  # the review queue has it from the open or update: a close stays small
        return AlertEvent(self._new_id(), inc.alert_id, self.station_id, inc.login, rule.type, state,
                          inc.started_at, ended_at, details, image=image, best_image=best)
