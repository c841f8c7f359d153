"""The assembled edge: camera -> capture thread -> link -> display -> web server, started and stopped as one."""
from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Optional

from edge.auth import AuthSettings, DashboardClient, SignIn, load_secret
from edge.camera import CaptureThread, FrameSource, open_source
from edge.config import EdgeConfig
from edge.display import DisplayThread
from edge.frames import LatestFrame
from edge.link import RecognizerLink
from edge.web import EdgeState, create_app
from shared.jpeg import encode_jpeg
from shared.web_server import WebServer

log = logging.getLogger(__name__)


class StateDirError(RuntimeError):
    """The folder for the session key and the enrolment record cannot be written (e.g. a read-only install)."""


class Edge:
    """Builds every part from an EdgeConfig; `start()` runs them, `stop()` sets one event and joins all.

    A `source` may be passed in (tests, or a camera opened elsewhere); otherwise `config.source` is opened.
    """

    def __init__(self, config: EdgeConfig, source: Optional[FrameSource] = None) -> None:
        self.config = config
        self._stopped = False
        self.stop_event = threading.Event()
        frames_changed = threading.Condition()  # raw and annotated share it: the display waits on either
        self.raw: LatestFrame = LatestFrame(frames_changed)
        self.annotated: LatestFrame = LatestFrame(frames_changed)
        self.display: LatestFrame = LatestFrame()
        self.source = source if source is not None else open_source(config.source)
        self.capture = CaptureThread(self.source, self.raw, self.stop_event, fps_cap=config.fps_cap)
        self.link = RecognizerLink(config.link_settings(), self.raw, self.annotated, camera=self._camera_report)
        self.display_thread = DisplayThread(
            self.raw, self.annotated, self.display, self.link.offline_reason, self.stop_event,
            jpeg_quality=config.jpeg_quality, camera_lost=self._camera_lost,
        )
        self.state = EdgeState(
            display=self.display,
            link=self.link,
            stop=self.stop_event,
            station=config.station,
            feed_mode=lambda: self.display_thread.mode,
            camera_status=self._camera_status,
            max_viewers=config.max_viewers,
        )
        if config.auth_on:
            state_dir = Path(config.state_dir)
            self.state.auth = SignIn(
                AuthSettings(station=config.station, verify_frames=config.verify_frames,
                             verify_timeout_s=config.verify_timeout, session_idle_s=config.session_idle,
                             session_max_s=config.session_max, max_sessions=config.max_sessions),
                DashboardClient(config.dashboard_url, config.dashboard_token),
                self.link,
                evidence=self._evidence_jpeg,
            )
            try:
                self.state.secret_key = config.secret_key or load_secret(state_dir / "secret_key")
            except OSError as exc:
                self.source.close()
                raise StateDirError(
                    f"cannot write the edge's state folder {state_dir.resolve()} ({exc.strerror or exc}): set "
                    "--state-dir / FACEMON_EDGE_STATE_DIR to a writable folder (deploy/facemon-edge.service "
                    "gives it /var/lib/facemon-edge with StateDirectory=)") from None
            self.state.enrolment_log = state_dir / "enrolments.jsonl"
        self.app = create_app(self.state)
        try:
            # the production server (waitress): bounded threads, deadlines; `stop` ends the feeds first
            self.server = WebServer(self.app, config.web_server(), on_stop=self.stop_event.set)
        except BaseException:
            self.source.close()
            raise

    @property
    def url(self) -> str:
        host = self.config.web_host if self.config.web_host not in ("0.0.0.0", "::") else "127.0.0.1"
        return f"http://{host}:{self.server.port}/video_feed_page"

    def _evidence_jpeg(self) -> Optional[bytes]:
        """The current camera frame as JPEG (evidence sent with a failed sign-in), or None before the first."""
        frame = self.raw.latest()
        return None if frame is None else encode_jpeg(frame.data, 85, self.config.max_width)

    def _camera_status(self) -> dict:
        """For /api/status: state starting/ok/lost, error, since, last frame's age, source, frames."""
        health = self.capture.health()
        return {
            "source": getattr(self.source, "description", self.config.source),
            **health.to_dict(),
            "running": health.state == "ok",
            "frames": self.capture.frames,
        }

    def _camera_report(self) -> Optional[dict]:
        """The camera state the link tells the recognizer; None while starting."""
        health = self.capture.health()
        if health.state == "starting":
            return None
        return {"state": health.state, "error": health.error,
                "lost_s": health.last_frame_age_s if health.state == "lost" else None}

    def _camera_lost(self) -> Optional[str]:
        """Why the camera is lost (for the picture), or None while frames come."""
        health = self.capture.health()
        return (health.error or "no frames") if health.state == "lost" else None

    def start(self) -> None:
        self.capture.start()
        self.display_thread.start()
        self.link.start()
        self.server.start()
        log.info("edge %s serving %s", self.config.station, self.url)

    def stop(self) -> None:
        """Stop everything: web server, link, capture, display; safe to call twice."""
        if self._stopped:
            return
        self._stopped = True
        log.info("edge stopping")
        self.stop_event.set()  # viewers notice it within ~1 s and end their streams
        self.server.stop()  # stops accepting; requests in service get the grace to finish
        self.link.stop()
        if self.capture.is_alive():
            self.capture.join(5)
        else:
            self.source.close()  # never started: close it here instead of in the thread's `finally`
        self.raw.close()  # wakes the display thread for good
        if self.display_thread.is_alive():
            self.display_thread.join(5)
        self.display.close()
        log.info("edge stopped")
