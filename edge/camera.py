"""Camera sources behind one small interface, and the thread that keeps the newest frame.

A source is chosen from one `--source` string (see `open_source`):

- ``picamera``: the Raspberry Pi camera through picamera2 (imported only when asked for);
- an integer such as ``0``: a USB webcam by index;
- a path to a video file: played in a loop, paced to the file's frame rate so it behaves like a camera;
- an ``rtsp://``, ``http://`` or ``https://`` URL: a network stream, reopened with back-off when it fails.

Every source has ``read() -> BGR ndarray | None`` (None: no frame right now, try again) and ``close()``.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any, Callable, Optional, Protocol

import cv2
import numpy as np

from edge.frames import LatestFrame

log = logging.getLogger(__name__)

_URL_SCHEMES = ("rtsp://", "rtsps://", "http://", "https://")
DEFAULT_FILE_FPS = 25.0


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


class StreamSource:
    """An RTSP/HTTP stream; on failure it is closed and reopened with back-off (1 s doubling to 30 s)."""

    def __init__(self, url: str, capture_factory: Callable[[Any], Any] = cv2.VideoCapture) -> None:
        self.url = url
        self.description = f"stream {_redact(url)}"
        self._factory = capture_factory
        self._cap: Any = None
        self._delay = 1.0
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
        self._delay = 1.0
        return frame

    def _fail(self, what: str) -> None:
        log.warning("%s: %s; retrying in %.0f s", self.description, what, self._delay)
        if self._cap is not None:
            self._cap.release()
        self._cap = None
        self._retry_at = time.monotonic() + self._delay
        self._delay = min(self._delay * 2, 30.0)

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


class CaptureThread(threading.Thread):
    """Reads the source continuously and publishes each frame into `output`; closes the source when done.

    `fps_cap` (> 0) limits how often frames are published. Stops when `stop` is set.
    """

    def __init__(
        self,
        source: FrameSource,
        output: LatestFrame,
        stop: threading.Event,
        fps_cap: float = 0.0,
        idle_wait_s: float = 0.05,
    ) -> None:
        super().__init__(name="capture", daemon=True)
        self.source = source
        self.output = output
        self.stop_event = stop
        self.min_period = 1.0 / fps_cap if fps_cap > 0 else 0.0
        self.idle_wait_s = idle_wait_s
        self.frames = 0
        self.error: Optional[BaseException] = None

    def run(self) -> None:
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
