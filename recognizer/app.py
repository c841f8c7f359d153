"""Wiring of the recognizer process: settings → models, index, encoder pool, server. Used by main() and tests."""
from __future__ import annotations

import argparse
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from recognizer.detect import EngineConfig, FaceEngine
from recognizer.enroll import Enroller
from recognizer.index import IndexStore
from recognizer.match import OpenSetParams
from recognizer.pipeline import PipelineConfig, StationPipeline
from recognizer.server import RecognizerServer, ServerConfig
from recognizer.workers import EncoderPool

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RecognizerSettings:
    """Everything the recognizer process is configured with, validated when built."""

    server: ServerConfig = field(default_factory=ServerConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    match: OpenSetParams = field(default_factory=OpenSetParams)
    index_dir: Path = Path("encodings")
    known_faces: Path = Path("known_faces")
    workers: int = 0  # encoder processes; 0 = one per core
    liveness_method: str = "both"
    first_blink_timeout_s: float = 300.0
    blink_timeout_s: float = 15.0

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "RecognizerSettings":
        return cls(
            server=ServerConfig(
                host=args.host, port=args.port, token=args.token,
                max_stations=args.max_stations, max_in_flight=args.max_in_flight,
            ),
            engine=EngineConfig(detector=args.detector, upsample=args.upsample),
            pipeline=PipelineConfig(detect_scale=args.downscale, liveness=args.liveness),
            match=OpenSetParams(tolerance=args.tolerance),
            index_dir=Path(args.index),
            known_faces=Path(args.known_faces),
            workers=args.workers,
            liveness_method=args.liveness_method,
            first_blink_timeout_s=args.first_blink_timeout,
            blink_timeout_s=args.blink_timeout,
        )


class RecognizerApp:
    """Builds and runs the recognizer; `stop()` releases every thread and process."""

    def __init__(self, settings: RecognizerSettings) -> None:
        self.settings = settings
        self.server: Optional[RecognizerServer] = None
        self.pool: Optional[EncoderPool] = None
        self._stop = threading.Event()

    def start(self) -> tuple[str, int]:
        s = self.settings
        engine = FaceEngine(s.engine)
        store = IndexStore(s.index_dir)
        self.pool = EncoderPool(s.workers or None)
        liveness_factory = None
        if s.pipeline.liveness:
            from recognizer.eyes import EyeStateModel
            from recognizer.liveness import FaceLiveness, LivenessParams

            params = LivenessParams(first_blink_timeout_s=s.first_blink_timeout_s, blink_timeout_s=s.blink_timeout_s)
            eye_model = EyeStateModel.load() if s.liveness_method in ("cnn", "both") else None
            liveness_factory = lambda: FaceLiveness(params, eye_model, method=s.liveness_method)  # noqa: E731

        def new_pipeline() -> StationPipeline:
            return StationPipeline(
                engine, self.pool, store, s.pipeline, s.match,
                liveness=liveness_factory() if liveness_factory else None,
            )

        self.server = RecognizerServer(s.server, store, new_pipeline, Enroller(engine, store, s.known_faces))
        return self.server.start()

    def request_stop(self) -> None:
        self._stop.set()

    def wait(self) -> None:
        self._stop.wait()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
        if self.pool is not None:
            self.pool.close()
