"""What the edge page shows: the recognizer's annotated frames, or raw frames with an offline banner.

One display thread picks the picture and JPEG-encodes it once; every MJPEG viewer then waits on the
`output` holder for the next JPEG, so N viewers cost one encode, not N.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Optional

import cv2
import numpy as np

from edge.frames import LatestFrame
from edge.link import encode_jpeg

log = logging.getLogger(__name__)

BANNER_BGR = (0, 0, 200)


def draw_banner(frame: np.ndarray, text: str) -> np.ndarray:
    """A copy of `frame` with a red bar across the top carrying `text` (white); the input is untouched."""
    out = frame.copy()
    height, width = out.shape[:2]
    scale = max(0.35, min(1.0, width / 900.0))
    thickness = 1 if scale < 0.7 else 2
    (tw, th), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    if tw > width - 16:  # shrink long reasons to fit the frame rather than cut them off
        scale = max(0.3, scale * (width - 16) / tw)
        thickness = 1
        (tw, th), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    bar = min(height, th + baseline + 16)
    cv2.rectangle(out, (0, 0), (width, bar), BANNER_BGR, thickness=-1)
    cv2.putText(out, text, (8, bar - baseline - 6), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thickness,
                cv2.LINE_AA)
    return out


class DisplayThread(threading.Thread):
    """Publishes JPEGs for the page into `output`.

    While `offline_reason()` is None and an annotated frame is at most `stale_after_s` old, the
    annotated JPEGs pass straight through (no re-encode); otherwise each new raw frame is shown with a
    banner saying why. `raw` and `annotated` must share one Condition so one wait covers both.
    """

    def __init__(
        self,
        raw: LatestFrame,
        annotated: LatestFrame,
        output: LatestFrame,
        offline_reason: Callable[[], Optional[str]],
        stop: threading.Event,
        stale_after_s: float = 1.0,
        jpeg_quality: int = 80,
        max_fps: float = 0.0,
    ) -> None:
        super().__init__(name="display", daemon=True)
        if raw.condition is not annotated.condition:
            raise ValueError("raw and annotated holders must share one Condition")
        self.raw, self.annotated, self.output = raw, annotated, output
        self.offline_reason = offline_reason
        self.stop_event = stop
        self.stale_after_s = stale_after_s
        self.jpeg_quality = jpeg_quality
        self.min_period = 1.0 / max_fps if max_fps > 0 else 0.0
        self._mode = "starting"
        self._lock = threading.Lock()

    @property
    def mode(self) -> str:
        """'annotated' (recognizer's frames), 'raw' (camera frames with a banner), or 'starting'."""
        with self._lock:
            return self._mode

    def _set_mode(self, mode: str, why: str = "") -> None:
        with self._lock:
            changed, self._mode = self._mode != mode, mode
        if changed:
            log.info("display now shows %s frames%s", mode, f" ({why})" if why else "")

    def run(self) -> None:
        cond = self.raw.condition
        last_raw = last_ann = 0
        last_raw_shown = 0.0
        try:
            while not self.stop_event.is_set():
                with cond:
                    cond.wait_for(
                        lambda: self.raw.seq != last_raw or self.annotated.seq != last_ann or self.raw.closed, 0.5
                    )
                    raw, ann = self.raw.latest(), self.annotated.latest()
                if self.raw.closed:
                    break
                reason = self.offline_reason()
                fresh = reason is None and ann is not None and time.time() - ann.ts <= self.stale_after_s
                if fresh and ann is not None and ann.seq != last_ann:
                    self.output.publish(ann.data, ann.ts)
                    self._set_mode("annotated")
                elif not fresh and raw is not None and raw.seq != last_raw:
                    now = time.monotonic()
                    if now - last_raw_shown >= self.min_period:
                        last_raw_shown = now
                        text = f"recognizer offline: {reason}" if reason else "recognizer not answering"
                        self.output.publish(encode_jpeg(draw_banner(raw.data, text), self.jpeg_quality), raw.ts)
                        self._set_mode("raw", text)
                last_raw = raw.seq if raw is not None else 0
                last_ann = ann.seq if ann is not None else 0
        finally:
            self.output.close()
            log.info("display stopped")
