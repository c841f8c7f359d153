"""Where alerts go: the dashboard (multipart, bearer token), a webhook (JSON), and station status reports.

Sinks are called only from the outbox's sender thread; each turns an HTTP answer into success, a
`TransientDeliveryError` (connection error, timeout, 408, 429, 5xx: retry later) or a
`PermanentDeliveryError` (any other answer: the reason is the server's own `error` text when it
sends one). The status reporter is best effort and bypasses the outbox: a missed report is
replaced by the next one five seconds later.
"""
from __future__ import annotations

import base64
import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Optional

from recognizer.alerting.outbox import PermanentDeliveryError, TransientDeliveryError
from recognizer.station.types import StationSnapshot
from shared.alert_wire import iso
from shared.config import ConfigError
from shared.http import TIMEOUT_S, HttpError, Response, post, post_json, post_multipart

log = logging.getLogger(__name__)


def delivered(request: Callable[[], Response]) -> None:
    """Run one request as a delivery: no answer is transient (a malformed URL permanent), then `check_answer`."""
    try:
        answer = request()
    except HttpError as exc:
        raise (TransientDeliveryError if exc.transient else PermanentDeliveryError)(str(exc)) from None
    check_answer(answer)


def check_answer(answer: Response) -> None:
    """Raise the right delivery error for a non-2xx answer."""
    code = answer.status
    if 200 <= code < 300:
        return
    text = f"HTTP {code}: {answer.reason()}"
    if code in (408, 429) or code >= 500:
        raise TransientDeliveryError(text)
    if 300 <= code < 400:
        text += f" (redirected to {answer.location or '?'}; configure the final URL)"
    raise PermanentDeliveryError(text)


@dataclass(frozen=True)
class DashboardTarget:
    """The dashboard's base URL (http://host:5000) and a station or service token."""

    url: str
    token: str

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ConfigError(f"dashboard URL must start with http:// or https://, got {self.url!r}")
        if not self.token:
            raise ConfigError("a dashboard URL needs a token (--dashboard-token): add one with "
                              "`python -m dashboard add-station --station-id recognizer --kind service`")
        object.__setattr__(self, "url", self.url.rstrip("/"))


class DashboardSink:
    """POST {url}/api/alerts: multipart `meta` JSON, `image` (opening evidence) and optional `best_image`."""

    name = "dashboard"

    def __init__(self, target: DashboardTarget) -> None:
        self.target = target

    def deliver(self, meta: bytes, image: Optional[bytes], best_image: Optional[bytes]) -> None:
        parts = [("meta", None, "application/json", bytes(meta))]  # the stored JSON, as it is
        if image is not None:
            parts.append(("image", "evidence.jpg", "image/jpeg", bytes(image)))
        if best_image is not None:
            parts.append(("best_image", "best.jpg", "image/jpeg", bytes(best_image)))
        delivered(lambda: post_multipart(f"{self.target.url}/api/alerts", parts, self.target.token))


class WebhookSink:
    """POST the alert as one JSON object to any URL (chat, MQTT bridges). Images as base64 only when asked.

    Body: the dashboard's meta fields, plus `image_b64`/`best_image_b64` when `include_images`.
    At-least-once: a receiver that must not see a repeat should key on `event_id`.
    """

    name = "webhook"

    def __init__(self, url: str, include_images: bool = False, headers: Optional[dict] = None) -> None:
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"webhook URL must start with http:// or https://, got {url!r}")
        self.url = url
        self.include_images = include_images
        self.headers = dict(headers or {})

    def deliver(self, meta: bytes, image: Optional[bytes], best_image: Optional[bytes]) -> None:
        if not self.include_images:  # the stored JSON, as it is
            delivered(lambda: post(self.url, bytes(meta), {"Content-Type": "application/json", **self.headers}))
            return
        body = json.loads(meta)
        if image is not None:
            body["image_b64"] = base64.b64encode(image).decode()
        if best_image is not None:
            body["best_image_b64"] = base64.b64encode(best_image).decode()
        delivered(lambda: post_json(self.url, body, headers=self.headers))


MAX_SILENT_S = 86400.0  # the dashboard's bound of `silent_s`


def station_report(st: StationSnapshot, now: float, stale_after_s: float) -> dict:
    """The status body for one connected station. Frames/s is 0 when the camera is lost or no frame was
    answered for `stale_after_s` (the rate from before would be stale); `camera` is ok/lost/unknown; `silent_s`:
    seconds since the desk last sent anything (a frame or a heartbeat), so the dashboard's offline clock starts
    when the desk went silent, not when this recognizer gives up on it (its idle timeout, 15 s)."""
    stale = st.camera == "lost" or not st.last_frame_at or now - st.last_frame_at > stale_after_s
    fps = 0.0 if stale else round(min(max(float(st.fps), 0.0), 1000.0), 2)
    silent = round(min(max(now - (st.last_seen or st.connected_at), 0.0), MAX_SILENT_S), 2)
    return {"fps": fps, "recognizer_connected": True, "silent_s": silent, "login_name": st.login or None,
            "faces": 0 if stale else min(len(st.faces or []), 1000), "camera": st.camera,
            "camera_error": (st.camera_error or "")[:200] or None}


def outbox_degraded(state: str) -> list[str]:
    """The status report's `degraded` codes (shared.station_state) for an outbox state (shared.alerts.OUTBOX_STATES)."""
    return {"disk_full": ["disk_full"], "degraded": ["alerts_degraded"]}.get(state, [])


class StatusReporter:
    """Every `interval_s`, POST each connected station's status to the dashboard; one last report when it leaves."""

    def __init__(self, target: DashboardTarget, stations: Callable[[], Iterable[StationSnapshot]], interval_s: float = 5.0,
                 stale_after_s: float = 3.0, node: str = "", alerts_state: Callable[[], str] = lambda: "ok",
                 overloaded: Callable[[], bool] = lambda: False) -> None:
        self.target = target
        self.node = node  # in a pool: each report names the station's session on this node (dashboard/handover.py)
        self._alerts_state = alerts_state  # the outbox's state (shared.alerts.OUTBOX_STATES), in every report
        self._overloaded = overloaded  # the stations' share of this machine is under their planned frames/s: `slow`
        self._poke = threading.Event()
        self.stale_after_s = stale_after_s
        self._stations = stations
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._reported: set[str] = set()
        self._known: set[str] = set()  # every station reported in this run: told of a change of the outbox state
        self._last_alerts = "ok"
        self._failing = False

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="status-reporter", daemon=True)
        self._thread.start()

    def poke(self) -> None:
        """Report now (the outbox's state changed), not at the next interval."""
        self._poke.set()

    def stop(self) -> None:
        self._stop.set()
        self._poke.set()
        if self._thread is not None:
            self._thread.join(timeout=2 * TIMEOUT_S + 1)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.report_once()
            self._poke.wait(self.interval_s)
            self._poke.clear()
        for station in sorted(self._reported):  # the recognizer is going: say so
            self._post(station, self._gone())

    def _gone(self) -> dict:
        return {"fps": 0.0, "recognizer_connected": False, "faces": 0, "degraded": outbox_degraded(self._alerts_state())}

    def report_once(self) -> None:
        now: set[str] = set()
        alerts = self._alerts_state()
        degraded = outbox_degraded(alerts) + (["slow"] if self._overloaded() else [])
        for st in list(self._stations()):
            now.add(st.station)
            report = {**station_report(st, time.time(), self.stale_after_s), "degraded": degraded}
            if self.node:
                report.update(node=self.node, session=f"{self.node}/{st.connected_at:.6f}", connected_at=iso(st.connected_at))
            self._post(st.station, report)
        # stations that left (and, when the outbox's state changed, those that left before) hear it too
        told = self._reported - now if alerts == self._last_alerts else self._known - now
        for station in sorted(told):
            self._post(station, self._gone())
        self._reported, self._last_alerts = now, alerts
        self._known |= now
        if len(self._known) > 4096:  # bounded: ids of stations long gone are forgotten
            self._known = set(now)

    def _post(self, station: str, body: dict) -> None:
        url = f"{self.target.url}/api/stations/{station}/status"
        try:
            delivered(lambda: post_json(url, body, self.target.token))
        except (TransientDeliveryError, PermanentDeliveryError) as exc:
            if not self._failing:
                log.warning("station status to the dashboard failed (%s); retrying every %.0f s quietly", exc, self.interval_s)
            self._failing = True
            return
        if self._failing:
            log.info("station status reaches the dashboard again")
        self._failing = False
