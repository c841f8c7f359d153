"""Camera sources behind one small interface, and the thread that keeps the newest frame.

A source is chosen from one `--source` string (see `open_source`):

- ``picamera``: the Raspberry Pi camera through picamera2 (imported only when asked for);
- an integer such as ``0``: a USB webcam by index;
- a path to a video file: played in a loop, paced to the file's frame rate so it behaves like a camera;
- an ``rtsp://``, ``http://`` or ``https://`` URL: a network stream, reopened within ~2 s when it fails.

Every source has ``read() -> BGR ndarray | None`` (None: no frame right now, try again) and ``close()``,
and may keep ``last_error`` (why the last read gave nothing). The capture thread judges the camera
lost when no frame came for ``lost_after_s`` (2.5 s), whatever the source does meanwhile.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional, Protocol

import cv2
import numpy as np

from edge.frames import LatestFrame
from shared.backoff import Backoff

log = logging.getLogger(__name__)

_URL_SCHEMES = ("rtsp://", "rtsps://", "http://", "https://")
DEFAULT_FILE_FPS = 25.0
LOST_AFTER_S = 2.5  # no camera frame for this long: the camera is lost
STREAM_TIMEOUT_MS = 3000  # OpenCV/FFmpeg open and read timeouts for network streams (its default is 30 s)


class CameraError(RuntimeError):
    """A camera source cannot be opened or used; the message says what to check."""


class FrameSource(Protocol):
    """What the capture thread needs from a camera."""

    def read(self) -> Optional[np.ndarray]:
        """Return the next BGR frame, or None when no frame is available right now."""

    def close(self) -> None:
        """Release the device; safe to call twice."""


class WebcamSource:
    """A USB webcam (V4L2 on Linux) by index."""

    def __init__(self, index: int, capture_factory: Callable[[Any], Any] = cv2.VideoCapture) -> None:
        self.description = f"webcam {index}"
        self._cap = capture_factory(index)
        if not self._cap.isOpened():
            self._cap.release()
            raise CameraError(f"cannot open webcam {index}: is it plugged in, and is /dev/video{index} readable?")
        log.info("opened %s", self.description)

    def read(self) -> Optional[np.ndarray]:
        ok, frame = self._cap.read()
        return frame if ok else None

    def close(self) -> None:
        self._cap.release()


class VideoFileSource:
    """A video file played in a loop; with `realtime`, `read()` is paced to the file's frame rate."""

    def __init__(self, path: str, realtime: bool = True) -> None:
        if not os.path.isfile(path):
            raise CameraError(f"video file not found: {path}")
        self.path = path
        self.description = f"video file {path}"
        self.realtime = realtime
        self.loops = 0
        self.last_error: Optional[str] = None
        self._cap = cv2.VideoCapture(path)
        if not self._cap.isOpened():
            self._cap.release()
            raise CameraError(f"cannot decode video file {path}: not a video OpenCV can read")
        fps = self._cap.get(cv2.CAP_PROP_FPS)
        self.fps = fps if 1.0 <= fps <= 240.0 else DEFAULT_FILE_FPS
        self._next_due = time.monotonic()
        ok, first = self._cap.read()
        if not ok:
            self._cap.release()
            raise CameraError(f"video file {path} has no readable frame")
        self._pending: Optional[np.ndarray] = first
        log.info("opened %s (%.2f fps, looping)", self.description, self.fps)

    def read(self) -> Optional[np.ndarray]:
        if self._pending is not None:
            frame, self._pending = self._pending, None
        else:
            ok, frame = self._cap.read()
            if not ok:
                frame = self._rewind()
        if self.realtime:
            self._pace()
        return frame

    def _rewind(self) -> Optional[np.ndarray]:
        self.loops += 1
        log.debug("%s: end reached, looping (%d)", self.description, self.loops)
        self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
        ok, frame = self._cap.read()
        if not ok:  # some containers cannot seek: reopen instead
            self._cap.release()
            self._cap = cv2.VideoCapture(self.path)
            ok, frame = self._cap.read()
        self.last_error = None if ok else f"{self.description}: cannot read it again from the start"
        return frame if ok else None

    def _pace(self) -> None:
        # Sleep until this frame is due; if we fell behind by more than a frame, do not try to catch up.
        now = time.monotonic()
        period = 1.0 / self.fps
        if self._next_due > now:
            time.sleep(self._next_due - now)
            self._next_due += period
        else:
            self._next_due = max(self._next_due + period, now - period)

    def close(self) -> None:
        self._cap.release()


def _open_stream(url: str) -> Any:
    """cv2.VideoCapture of a network stream with bounded open/read times, so a dead server is noticed."""
    return cv2.VideoCapture(url, cv2.CAP_FFMPEG, [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, STREAM_TIMEOUT_MS,
                                                  cv2.CAP_PROP_READ_TIMEOUT_MSEC, STREAM_TIMEOUT_MS])


class StreamSource:
    """An RTSP/HTTP stream; on failure it is closed and reopened after a short back-off (0.5 s doubling
    to `max_backoff_s`, 2 s: a camera that comes back is used again within ~2 s)."""

    def __init__(self, url: str, capture_factory: Callable[[Any], Any] = _open_stream,
                 initial_backoff_s: float = 0.5, max_backoff_s: float = 2.0) -> None:
        self._backoff = Backoff(initial_backoff_s, max_backoff_s)  # no jitter: one desk, one camera
        self.url = url
        self.description = f"stream {_redact(url)}"
        self.last_error: Optional[str] = None
        self._factory = capture_factory
        self._cap: Any = None
        self._retry_at = 0.0

    def read(self) -> Optional[np.ndarray]:
        now = time.monotonic()
        if self._cap is None:
            if now < self._retry_at:
                time.sleep(min(0.2, self._retry_at - now))  # caller loops; keep it from spinning
                return None
            self._cap = self._factory(self.url)
            if not self._cap.isOpened():
                self._fail("cannot open")
                return None
            log.info("opened %s", self.description)
        ok, frame = self._cap.read()
        if not ok:
            self._fail("read failed")
            return None
        self._backoff.reset()
        self.last_error = None
        return frame

    def _fail(self, what: str) -> None:
        delay = self._backoff.next_delay()
        first = self._backoff.failures == 1  # the first failure after frames: a warning; the retries: debug
        log.log(logging.WARNING if first else logging.DEBUG, "%s: %s; retrying in %.1f s", self.description, what,
                delay)
        self.last_error = f"{self.description}: {what}"
        if self._cap is not None:
            self._cap.release()
        self._cap = None
        self._retry_at = time.monotonic() + delay

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class PiCameraSource:
    """The Raspberry Pi camera through picamera2 (Raspberry Pi OS: `apt install python3-picamera2`)."""

    def __init__(self, size: tuple[int, int] = (640, 480)) -> None:
        try:
            from picamera2 import Picamera2  # imported here: only a Pi has it
        except ImportError as exc:
            raise CameraError(
                "source 'picamera' needs picamera2, which is not installed: on Raspberry Pi OS run "
                "'sudo apt install python3-picamera2' and create the venv with --system-site-packages, "
                "or use a USB webcam index such as --source 0"
            ) from exc
        self.description = "Pi camera"
        try:
            self._cam = Picamera2()
        except (RuntimeError, IndexError) as exc:  # what picamera2 raises when libcamera finds no camera
            raise CameraError(f"cannot open the Pi camera ({exc}): is it connected, and enabled in raspi-config?") from exc
        # "RGB888" in libcamera's naming is B,G,R byte order in memory: what OpenCV calls BGR.
        config = self._cam.create_video_configuration(main={"size": size, "format": "RGB888"})
        self._cam.configure(config)
        self._cam.start()
        log.info("opened %s at %dx%d", self.description, *size)

    def read(self) -> Optional[np.ndarray]:
        return self._cam.capture_array("main")

    def close(self) -> None:
        self._cam.stop()
        self._cam.close()


def _redact(url: str) -> str:
    """The URL without a password, for logs."""
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest.split("/", 1)[0]:
        rest = "***@" + rest.split("@", 1)[1]
    return f"{scheme}{sep}{rest}"


def open_source(spec: str, realtime: bool = True) -> FrameSource:
    """Open the source named by a `--source` string; raises CameraError with a sentence to act on."""
    spec = spec.strip()
    if not spec:
        raise CameraError("no camera source given: use picamera, a webcam index (0), a video file or an rtsp:// URL")
    if spec.lower() == "picamera":
        return PiCameraSource()
    if spec.isdigit():
        return WebcamSource(int(spec))
    if spec.lower().startswith(_URL_SCHEMES):
        return StreamSource(spec)
    if os.path.exists(spec):
        return VideoFileSource(spec, realtime=realtime)
    raise CameraError(
        f"source {spec!r} is not 'picamera', a webcam index, an existing video file, or an rtsp:// / http:// URL"
    )


@dataclass(frozen=True)
class CameraHealth:
    """Whether frames come from the camera: `state` starting | ok | lost, why not (`error`), since when
    (`since`, wall-clock seconds), and the age of the last frame in seconds (None before the first)."""

    state: str
    error: Optional[str]
    since: float
    last_frame_age_s: Optional[float]

    def to_dict(self) -> dict:
        return {"state": self.state, "error": self.error, "since": self.since,
                "last_frame_age_s": None if self.last_frame_age_s is None else round(self.last_frame_age_s, 2)}


class CaptureThread(threading.Thread):
    """Reads the source continuously and publishes each frame into `output`; closes the source when done.

    `fps_cap` (> 0) limits how often frames are published. Stops when `stop` is set. `health()` says
    whether the camera is delivering: lost after `lost_after_s` without a frame (judged from the clock,
    so a read blocked inside the driver cannot hide it).
    """

    def __init__(
        self,
        source: FrameSource,
        output: LatestFrame,
        stop: threading.Event,
        fps_cap: float = 0.0,
        idle_wait_s: float = 0.05,
        lost_after_s: float = LOST_AFTER_S,
    ) -> None:
        super().__init__(name="capture", daemon=True)
        self.source = source
        self.output = output
        self.stop_event = stop
        self.min_period = 1.0 / fps_cap if fps_cap > 0 else 0.0
        self.idle_wait_s = idle_wait_s
        self.lost_after_s = lost_after_s
        self.frames = 0
        self.error: Optional[BaseException] = None
        self._lock = threading.Lock()
        self._created = (time.monotonic(), time.time())
        self._last_frame: Optional[tuple[float, float]] = None  # (monotonic, wall) of the newest frame
        self._ok_since = 0.0  # wall time frames started coming (after a loss: came back)
        self._began = threading.Event()  # run() has started

    def health(self) -> CameraHealth:
        """The camera's state now (thread-safe)."""
        now = time.monotonic()
        with self._lock:
            last, ok_since = self._last_frame, self._ok_since
        age = None if last is None else now - last[0]
        description = getattr(self.source, "description", "the camera")
        if self.error is not None:
            return CameraHealth("lost", f"capture stopped: {self.error}", last[1] if last else self._created[1], age)
        if self._began.is_set() and not self.is_alive() and not self.stop_event.is_set():
            return CameraHealth("lost", "capture stopped", last[1] if last else self._created[1], age)
        source_error = getattr(self.source, "last_error", None)
        if last is None:
            if now - self._created[0] <= self.lost_after_s:
                return CameraHealth("starting", None, self._created[1], None)
            return CameraHealth("lost", source_error or f"no frame from {description} yet", self._created[1], None)
        if age is not None and age > self.lost_after_s:
            return CameraHealth("lost", source_error or f"no frame from {description} for {age:.0f} s", last[1], age)
        return CameraHealth("ok", None, ok_since, age)

    def run(self) -> None:
        self._began.set()
        last = 0.0
        misses = 0
        try:
            while not self.stop_event.is_set():
                frame = self.source.read()
                if frame is None:
                    misses += 1
                    if misses in (1, 100) or misses % 1000 == 0:
                        log.warning("camera gave no frame (%d in a row)", misses)
                    self.stop_event.wait(self.idle_wait_s)  # no frame: wait a little instead of spinning
                    continue
                misses = 0
                now = time.monotonic()
                self._got_frame(now)
                if self.min_period and now - last < self.min_period:
                    continue  # over the fps cap: drop this one (the read itself paced us)
                last = now
                self.output.publish(frame)
                self.frames += 1
        except Exception as exc:  # a camera driver error ends capture; the reason is kept for status
            self.error = exc
            log.exception("capture stopped by an error")
        finally:
            self.source.close()
            log.info("capture stopped after %d frames", self.frames)

    def _got_frame(self, now: float) -> None:
        wall = time.time()
        with self._lock:
            previous = self._last_frame
            self._last_frame = (now, wall)
            if previous is None or now - previous[0] > self.lost_after_s:
                self._ok_since = wall
        if previous is not None and now - previous[0] > self.lost_after_s:
            log.warning("camera back after %.1f s without frames", now - previous[0])
