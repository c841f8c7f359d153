"""Wiring of the recognizer process: settings → models, index, encoder pool, server. Used by main() and tests."""
from __future__ import annotations

import argparse
import logging
import socket
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Optional

from recognizer.alerting.monitor import AlertMonitor
from recognizer.alerting.outbox import Outbox, OutboxConfig, OutboxHealth
from recognizer.alerting.review import ReviewMonitor, ReviewPoster, ReviewThresholds
from recognizer.alerting.rules import ALERT_TYPES, AlertThresholds
from recognizer.alerting.sinks import DashboardSink, DashboardTarget, StatusReporter, WebhookSink
from recognizer.identity.enrol import Enroller
from recognizer.identity.gallery import GalleryClient, GalleryStore
from recognizer.identity.index import IndexStore
from recognizer.identity.match import OpenSetParams
from recognizer.liveness.blinks import FaceLiveness, LivenessParams
from recognizer.server.health import HealthServer, Readiness
from recognizer.server.stations import RecognizerServer, ServerConfig
from recognizer.server.trust import RevocationSync, Trust, TrustConfig
from recognizer.station.pipeline import PipelineConfig, StationPipeline
from recognizer.vision.detect import EngineConfig, FaceEngine
from recognizer.vision.encoders import ChipEncoder, EncoderPool
from recognizer.vision.regions import RegionParams
from recognizer.vision.sweep import (
    InlineSweeper,
    ProcessSweeper,
    StationSweep,
    Sweeper,
    SweepParams,
    correlation_follower,
)
from recognizer.settings import SETTINGS, check_section
from shared.config import ConfigError

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
    data_key_file: str = ""  # the data key ring (recognizer/data_key.py); empty: FACEMON_DATA_KEY, else none
    workers: int = 0  # encoder processes; 0 = one per core
    liveness: LivenessParams = field(default_factory=LivenessParams)
    liveness_method: str = "both"
    alerts: AlertThresholds = field(default_factory=AlertThresholds)
    outbox: OutboxConfig = field(default_factory=OutboxConfig)
    review: ReviewThresholds = field(default_factory=ReviewThresholds)  # not-sure faces to the review queue
    dashboard: Optional[DashboardTarget] = None  # alerts and station status go here when set
    trust: TrustConfig = field(default_factory=TrustConfig)  # station credentials and enrolment rights
    webhook_url: str = ""  # alerts also go here as JSON when set
    webhook_images: bool = False
    blur_bystanders: bool = True  # faces an alert is not about are pixelated in its stored evidence
    status_interval_s: float = 5.0
    gallery: str = "local"  # local: encodings/ on this disk (lab, demo); dashboard: the pool's one gallery
    health_port: int = 0  # GET /healthz for the balancer on this port (0: none)
    drain_timeout_s: float = 10.0  # on SIGTERM: how long stations get to leave before the node stops anyway

    def __post_init__(self) -> None:
        check_section(self, "")  # workers, status_interval_s, health_port ...: bounds as declared (recognizer/settings.py)
        # each part checks its own section the same way; here: values that go together
        if self.gallery == "dashboard" and self.dashboard is None:
            raise ConfigError("--gallery dashboard needs --dashboard-url and --dashboard-token (a service token)")
        if self.trust.station_auth == "dashboard" and self.dashboard is None:
            raise ConfigError("--station-auth dashboard needs --dashboard-url and --dashboard-token (the dashboard "
                              "holds the station credentials)")

    def check_exposure(self) -> None:
        """ConfigError when shared-token mode would listen on a network address without being told it may."""
        if self.trust.station_auth == "shared" and not self.trust.allow_shared_on_network and not _loopback(self.server.host):
            raise ConfigError(f"--station-auth shared (the default without --dashboard-url) on --host {self.server.host}: "
                              "anyone on the network who learns the shared --token can claim any desk. Give "
                              "--dashboard-url and --dashboard-token (per-station credentials), listen on 127.0.0.1, or "
                              "say --allow-shared-token-on-network for a closed lab network (docs/trust.md)")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "RecognizerSettings":
        """The settings from `recognizer.settings.build_parser().parse_args()`: each setting's value put where its
        declaration says (`into`); ConfigError (naming the value) when one is unusable."""
        sections: dict[str, dict] = {}
        flat: dict = {}
        defaults = cls()
        for s in SETTINGS:
            for target in s.into:
                section, _, name = target.rpartition(".")
                default = getattr(getattr(defaults, section), name) if section else getattr(defaults, name)
                value = getattr(args, s.dest)
                value = Path(value) if isinstance(default, Path) else value
                (sections.setdefault(section, {}) if section else flat)[name] = value
        # the settings that are more than one field's value
        sections["sweep"]["idle_period_s"] = min(args.sweep_period, 1.0)
        sections["pipeline"]["regions"] = RegionParams(full_every=args.full_detect_every,
                                                         full_every_max=args.full_detect_every_max,
                                                         search_every=args.search_every)
        sections["alerts"]["enabled"] = frozenset(_alert_types(args.alert_types))
        sections["trust"]["station_auth"] = args.station_auth or ("dashboard" if args.dashboard_url else "shared")
        sections["server"]["node"] = args.node_name or (f"{socket.gethostname()}:{args.port}" if args.health_port else "")
        try:
            settings = cls(
                **{name: replace(getattr(defaults, name), **values) for name, values in sections.items()},
                **flat,
                dashboard=DashboardTarget(args.dashboard_url, args.dashboard_token) if args.dashboard_url else None,
            )
        except ValueError as exc:  # a part's own validation (ServerConfig, EngineConfig ...): one error type
            raise ConfigError(str(exc)) from None
        return settings


def _loopback(host: str) -> bool:
    """Whether listening on `host` keeps the port on this machine (127.0.0.0/8, ::1, localhost)."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _alert_types(text: str) -> list[str]:
    """'all' or a comma-separated list of alert types."""
    if text.strip().lower() == "all":
        return list(ALERT_TYPES)
    return [t.strip() for t in text.split(",") if t.strip()]


def liveness_factory(s: RecognizerSettings) -> Optional[Callable[[], FaceLiveness]]:
    """A maker of one station's liveness state, with the eye model loaded once; None when liveness is off."""
    if not s.pipeline.liveness:
        return None
    from recognizer.liveness.eyes import EyeStateModel

    eye_model = EyeStateModel.load() if s.liveness_method in ("cnn", "both") else None
    return lambda: FaceLiveness(s.liveness, eye_model, method=s.liveness_method)


def pipeline_factory(s: RecognizerSettings, engine: FaceEngine, encoder: ChipEncoder, store: IndexStore,
                     clock: Callable[[], float] = time.monotonic,
                     sweeper: Optional[Sweeper] = None) -> Callable[[], StationPipeline]:
    """A maker of one station's per-frame pipeline, exactly as the server runs it (used by facemon-replay too).

    With detector hog+cnn each station sweeps with `sweeper` (the server passes its sweep process); without
    one, sweeps run inline in the station's own call on `clock`'s time (facemon-replay: repeatable)."""
    make_liveness = liveness_factory(s)

    def signin_liveness() -> FaceLiveness:  # --no-liveness: the sign-in check still needs a blink
        return FaceLiveness(s.liveness, method=s.liveness_method)

    if s.engine.detector == "hog+cnn" and sweeper is None:
        sweeper = InlineSweeper(engine, s.sweep)

    def new_pipeline() -> StationPipeline:
        sweep = None
        if s.engine.detector == "hog+cnn":
            sweep = StationSweep(sweeper, s.sweep, correlation_follower)
        return StationPipeline(
            engine, encoder, store, s.pipeline, s.match,
            liveness=make_liveness() if make_liveness is not None else None, clock=clock, sweep=sweep,
            signin_liveness=signin_liveness,
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
        self.review: Optional[ReviewPoster] = None
        self.revocations: Optional[RevocationSync] = None
        self.gallery: Optional[GalleryStore] = None
        self.health: Optional[HealthServer] = None
        self.readiness = Readiness()
        self.ring = None  # the data key ring, once start() has checked it
        self._stop = threading.Event()

    def start(self) -> tuple[str, int]:
        s = self.settings
        models_loaded = threading.Event()
        self.readiness.require("models", models_loaded.is_set)
        if s.health_port:  # first: a balancer sees "loading", not a dead port, while the models load
            self.health = HealthServer(s.server.host, s.health_port, self.readiness, s.server.node,
                                       lambda: len(self.server.stations()) if self.server is not None else 0,
                                       self._health_details)
            self.health.start()
        from recognizer import data_key

        # first: a missing, wrong or world-readable key is said before minutes of model loading
        self.ring = data_key.prepare(data_key.load(s.data_key_file), data_key.RecognizerFiles.of(s))
        engine = FaceEngine(s.engine)
        store = self._gallery_or_index()
        self.pool = EncoderPool(s.workers or None)
        if s.engine.detector == "hog+cnn":
            self.sweeper = ProcessSweeper(s.sweep)
        new_pipeline = pipeline_factory(s, engine, self.pool, store, sweeper=self.sweeper)
        s.check_exposure()
        trust = Trust(s.trust, s.dashboard)
        for warning in trust.describe():
            log.warning("%s", warning)
        self.server = RecognizerServer(s.server, store, new_pipeline, Enroller(engine, store, s.known_faces, s.match.accept_distance), trust)
        self.pool.on_cost = self.server.pacing.helper_cost  # the fair share counts the encodings' CPU too
        self._start_alerts(self.server)
        address = self.server.start()
        if s.trust.station_auth == "dashboard":  # revoked credentials of live sessions: disconnected within sync_s
            self.revocations = RevocationSync(trust, self.server.live_credentials, self.server.disconnect_station)
            self.revocations.start()
        models_loaded.set()
        return address

    def _gallery_or_index(self) -> IndexStore | GalleryStore:
        """The pool's gallery (followed from the dashboard, copied into --index) or the lab's encodings/."""
        s = self.settings
        if s.gallery != "dashboard":
            return IndexStore(s.index_dir, ring=self.ring)
        assert s.dashboard is not None
        self.gallery = GalleryStore(GalleryClient(s.dashboard.url, s.dashboard.token), s.index_dir, ring=self.ring)
        self.readiness.require("gallery", lambda: self.gallery.loaded)
        self.gallery.start()
        return self.gallery

    def _health_details(self) -> dict:
        g = self.gallery
        return {} if g is None else {"gallery": {"seq": g.seq, "encodings": len(g.index)}}

    def drain(self) -> None:
        """Graceful stop, first half: not ready for the balancer, no new stations, current ones told to move.

        Only for a pool member (one a balancer checks, --health-port): a lone recognizer has nowhere to send its
        stations, so it just stops (its incidents close with `recognizer_stopped`)."""
        if self.health is None:
            return
        self.readiness.drain("stopping")
        if self.server is not None:
            left = self.server.drain("stopping", self.settings.drain_timeout_s)
            if left:
                log.warning("draining: %d station(s) still connected after %.0f s; stopping anyway", left,
                            self.settings.drain_timeout_s)

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
            self.outbox = Outbox(s.outbox, sinks, on_health=lambda h: self._outbox_health(server, h), ring=self.ring)
            self.outbox.start()
            emit = self.outbox.put
            log.info("alerts go to %s (outbox %s)", ", ".join(x.name for x in sinks), s.outbox.path)
        else:
            log.info("no --dashboard-url or --webhook-url: alerts are only logged")
        self.alerts = AlertMonitor(s.alerts, emit, blur_bystanders=s.blur_bystanders)
        server.observers.append(self.alerts)
        if s.dashboard is not None:  # not-sure faces: the review queue's, apart from the alerts (alerting/review.py)
            self.review = ReviewPoster(s.dashboard.url, s.dashboard.token, s.review)
            self.review.start()
            server.observers.append(ReviewMonitor(self.review.put, s.review))
            self.reporter = StatusReporter(s.dashboard, server.stations, s.status_interval_s, node=s.server.node,
                                           alerts_state=lambda: server.alerts_state,
                                           overloaded=lambda: server.pacing.short)
            self.reporter.start()
            server.left_listeners.append(self.reporter.poke)  # a desk that left is reported gone now, not in 5 s

    def _outbox_health(self, server: RecognizerServer, health: OutboxHealth) -> None:
        """The outbox's state changed: the edges hear it at once, the dashboard with the next status report (now)."""
        server.report_status(alerts=health.state)
        if self.reporter is not None:
            self.reporter.poke()

    def request_stop(self) -> None:
        self._stop.set()

    def wait(self) -> None:
        self._stop.wait()

    def stop(self) -> None:
        if self.revocations is not None:
            self.revocations.stop()
        if self.server is not None:
            self.server.stop()
        if self.alerts is not None:
            self.alerts.stop()  # closes the incidents still open
        if self.reporter is not None:
            self.reporter.stop()
        if self.review is not None:
            self.review.stop()
        if self.outbox is not None:
            self.outbox.stop(flush_timeout_s=3.0)
        if self.pool is not None:
            self.pool.close()
        if self.sweeper is not None:
            self.sweeper.close()
        if self.gallery is not None:
            self.gallery.stop()
        if self.health is not None:
            self.health.stop()
