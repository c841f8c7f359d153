"""Wiring of the recognizer process: settings → models, index, encoder pool, server. Used by main() and tests."""
from __future__ import annotations

import argparse
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

from recognizer.alerting.monitor import AlertMonitor
from recognizer.alerting.outbox import Outbox, OutboxConfig
from recognizer.alerting.rules import ALERT_TYPES, AlertThresholds
from recognizer.alerting.sinks import DashboardSink, DashboardTarget, StatusReporter, WebhookSink
from recognizer.identity.enroll import Enroller
from recognizer.identity.index import IndexStore
from recognizer.identity.match import OpenSetParams
from recognizer.server.stations import RecognizerServer, ServerConfig
from recognizer.server.trust import Trust, TrustConfig
from recognizer.vision.detect import EngineConfig, FaceEngine
from recognizer.vision.encoders import ChipEncoder, EncoderPool
from recognizer.vision.pipeline import PipelineConfig, StationPipeline
from recognizer.vision.regions import RegionParams
from recognizer.vision.sweep import (
    InlineSweeper,
    ProcessSweeper,
    StationSweep,
    Sweeper,
    SweepParams,
    correlation_follower,
)
from shared.config import ConfigError

if TYPE_CHECKING:
    from recognizer.liveness.blinks import FaceLiveness

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RecognizerSettings:
    """Everything the recognizer process is configured with, validated when built."""

    server: ServerConfig = field(default_factory=ServerConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    sweep: SweepParams = field(default_factory=SweepParams)  # used with detector hog+cnn
    match: OpenSetParams = field(default_factory=OpenSetParams)
    index_dir: Path = Path("encodings")
    known_faces: Path = Path("known_faces")
    workers: int = 0  # encoder processes; 0 = one per core
    liveness_method: str = "both"
    first_blink_timeout_s: float = 30.0
    blink_timeout_s: float = 60.0
    alerts: AlertThresholds = field(default_factory=AlertThresholds)
    outbox: OutboxConfig = field(default_factory=OutboxConfig)
    dashboard: Optional[DashboardTarget] = None  # alerts and station status go here when set
    trust: TrustConfig = field(default_factory=TrustConfig)  # station credentials and enrolment rights
    webhook_url: str = ""  # alerts also go here as JSON when set
    webhook_images: bool = False
    status_interval_s: float = 5.0

    def __post_init__(self) -> None:
        if self.trust.station_auth == "dashboard" and self.dashboard is None:
            raise ConfigError("--station-auth dashboard needs --dashboard-url and --dashboard-token (the dashboard "
                              "holds the station credentials)")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "RecognizerSettings":
        """The settings from `build_parser().parse_args()`; ConfigError (naming the value) when one is unusable."""
        try:
            return cls(
                server=ServerConfig(
                    host=args.host, port=args.port, token=args.token,
                    max_stations=args.max_stations, max_in_flight=args.max_in_flight,
                    station_fps=args.station_fps, max_station_fps=args.max_station_fps,
                ),
                engine=EngineConfig(detector=args.detector, upsample=args.upsample),
                pipeline=PipelineConfig(detect_scale=args.downscale, liveness=args.liveness,
                                        regions=RegionParams(full_every=args.full_detect_every)),
                sweep=SweepParams(period_s=args.sweep_period, idle_period_s=min(args.sweep_period, 1.0),
                                  budget=args.sweep_budget, scale=args.sweep_scale),
                match=OpenSetParams(tolerance=args.tolerance, accept_distance=args.accept_distance, margin=args.margin,
                                    min_votes=args.min_votes),
                index_dir=Path(args.index),
                known_faces=Path(args.known_faces),
                workers=args.workers,
                liveness_method=args.liveness_method,
                first_blink_timeout_s=args.first_blink_timeout,
                blink_timeout_s=args.blink_timeout,
                alerts=AlertThresholds(
                    unknown_after_s=args.unknown_after, wrong_person_after_s=args.unknown_after,
                    multiple_after_s=args.multiple_after, no_face_after_s=args.no_face_after,
                    no_blink_after_s=args.no_blink_after, eyes_closed_after_s=args.eyes_closed_after,
                    cooldown_s=args.cooldown,
                    enabled=frozenset(_alert_types(args.alert_types)),
                ),
                outbox=OutboxConfig(path=Path(args.outbox)),
                dashboard=DashboardTarget(args.dashboard_url, args.dashboard_token) if args.dashboard_url else None,
                trust=TrustConfig(station_auth=args.station_auth or ("dashboard" if args.dashboard_url else "shared"),
                                  enrol_policy=args.enrol_policy, grace_s=args.credential_grace),
                webhook_url=args.webhook_url,
                webhook_images=args.webhook_images,
            )
        except ValueError as exc:  # a part's own validation (ServerConfig, EngineConfig ...): one error type
            raise ConfigError(str(exc)) from None


def _alert_types(text: str) -> list[str]:
    """'all' or a comma-separated list of alert types."""
    if text.strip().lower() == "all":
        return list(ALERT_TYPES)
    return [t.strip() for t in text.split(",") if t.strip()]


def liveness_factory(s: RecognizerSettings) -> Optional[Callable[[], "FaceLiveness"]]:
    """A maker of one station's liveness state, with the eye model loaded once; None when liveness is off."""
    if not s.pipeline.liveness:
        return None
    from recognizer.liveness.blinks import FaceLiveness, LivenessParams
    from recognizer.liveness.eyes import EyeStateModel

    params = LivenessParams(first_blink_timeout_s=s.first_blink_timeout_s, blink_timeout_s=s.blink_timeout_s)
    eye_model = EyeStateModel.load() if s.liveness_method in ("cnn", "both") else None
    return lambda: FaceLiveness(params, eye_model, method=s.liveness_method)


def pipeline_factory(s: RecognizerSettings, engine: FaceEngine, encoder: ChipEncoder, store: IndexStore,
                     clock: Callable[[], float] = time.monotonic,
                     sweeper: Optional[Sweeper] = None) -> Callable[[], StationPipeline]:
    """A maker of one station's per-frame pipeline, exactly as the server runs it (used by facemon-replay too).

    With detector hog+cnn each station sweeps with `sweeper` (the server passes its sweep process); without
    one, sweeps run inline in the station's own call on `clock`'s time (facemon-replay: repeatable)."""
    make_liveness = liveness_factory(s)
    if s.engine.detector == "hog+cnn" and sweeper is None:
        sweeper = InlineSweeper(engine, s.sweep)

    def new_pipeline() -> StationPipeline:
        sweep = None
        if s.engine.detector == "hog+cnn":
            sweep = StationSweep(sweeper, s.sweep, correlation_follower)
        return StationPipeline(
            engine, encoder, store, s.pipeline, s.match,
            liveness=make_liveness() if make_liveness is not None else None, clock=clock, sweep=sweep,
        )

    return new_pipeline


class RecognizerApp:
    """Builds and runs the recognizer; `stop()` releases every thread and process."""

    def __init__(self, settings: RecognizerSettings) -> None:
        self.settings = settings
        self.server: Optional[RecognizerServer] = None
        self.pool: Optional[EncoderPool] = None
        self.sweeper: Optional[ProcessSweeper] = None
        self.outbox: Optional[Outbox] = None
        self.alerts: Optional[AlertMonitor] = None
        self.reporter: Optional[StatusReporter] = None
        self._stop = threading.Event()

    def start(self) -> tuple[str, int]:
        s = self.settings
        engine = FaceEngine(s.engine)
        store = IndexStore(s.index_dir)
        self.pool = EncoderPool(s.workers or None)
        if s.engine.detector == "hog+cnn":
            self.sweeper = ProcessSweeper(s.sweep)
        new_pipeline = pipeline_factory(s, engine, self.pool, store, sweeper=self.sweeper)
        trust = Trust(s.trust, s.dashboard)
        for warning in trust.describe():
            log.warning("%s", warning)
        self.server = RecognizerServer(s.server, store, new_pipeline, Enroller(engine, store, s.known_faces), trust)
        self._start_alerts(self.server)
        return self.server.start()

    def _start_alerts(self, server: RecognizerServer) -> None:
        """Alert rules on every frame; events through the outbox to the dashboard/webhook, or only logged."""
        s = self.settings
        sinks: list = []
        if s.dashboard is not None:
            sinks.append(DashboardSink(s.dashboard))
        if s.webhook_url:
            sinks.append(WebhookSink(s.webhook_url, include_images=s.webhook_images))
        emit = lambda ev: None  # noqa: E731 - no sink: the monitor's INFO log line is the alert
        if sinks:
            self.outbox = Outbox(s.outbox, sinks)
            self.outbox.start()
            emit = self.outbox.put
            log.info("alerts go to %s (outbox %s)", ", ".join(x.name for x in sinks), s.outbox.path)
        else:
            log.info("no --dashboard-url or --webhook-url: alerts are only logged")
        self.alerts = AlertMonitor(s.alerts, emit)
        server.observers.append(self.alerts)
        if s.dashboard is not None:
            self.reporter = StatusReporter(s.dashboard, server.stations, s.status_interval_s)
            self.reporter.start()

    def request_stop(self) -> None:
        self._stop.set()

    def wait(self) -> None:
        self._stop.wait()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
        if self.alerts is not None:
            self.alerts.stop()  # closes the incidents still open
        if self.reporter is not None:
            self.reporter.stop()
        if self.outbox is not None:
            self.outbox.stop(flush_timeout_s=3.0)
        if self.pool is not None:
            self.pool.close()
        if self.sweeper is not None:
            self.sweeper.close()
