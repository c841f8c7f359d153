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
from shared.jpeg import encode_jpeg

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


def camera_lost_card(size: tuple[int, int], reason: str, since: float) -> np.ndarray:
    """A dark picture saying the camera is lost, why and since when: shown instead of a black or frozen frame."""
    height, width = size
    card = np.full((height, width, 3), 40, np.uint8)
    scale = max(0.6, min(2.0, width / 400.0))
    thick = max(2, int(scale * 2))
    title = "CAMERA LOST"
    (tw, th), _ = cv2.getTextSize(title, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    cv2.putText(card, title, ((width - tw) // 2, height // 2 - th), cv2.FONT_HERSHEY_SIMPLEX, scale, (60, 60, 255),
                thick, cv2.LINE_AA)
    lines = [f"no picture since {time.strftime('%H:%M:%S', time.localtime(since))}", reason]
    small = scale * 0.45
    y = height // 2 + th
    for line in lines:
        (lw, lh), _ = cv2.getTextSize(line, cv2.FONT_HERSHEY_SIMPLEX, small, 1)
        if lw > width - 16:
            line = line[: max(8, int(len(line) * (width - 16) / lw)) - 1] + "…"
            (lw, lh), _ = cv2.getTextSize(line, cv2.FONT_HERSHEY_SIMPLEX, small, 1)
        cv2.putText(card, line, (max(8, (width - lw) // 2), y), cv2.FONT_HERSHEY_SIMPLEX, small, (230, 230, 230), 1,
                    cv2.LINE_AA)
        y += int(lh * 2.2)
    return card


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
        camera_lost: Callable[[], Optional[str]] = lambda: None,
        lost_card_every_s: float = 1.0,
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
        self.camera_lost = camera_lost
        self.lost_card_every_s = lost_card_every_s
        self._mode = "starting"
        self._lock = threading.Lock()

    @property
    def mode(self) -> str:
        """'annotated' (recognizer's frames), 'raw' (camera frames with a banner), 'camera_lost' (a card
        saying so), or 'starting'."""
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
        last_raw_shown = last_card = 0.0
        try:
            while not self.stop_event.is_set():
                with cond:
                    cond.wait_for(
                        lambda: self.raw.seq != last_raw or self.annotated.seq != last_ann or self.raw.closed, 0.5
                    )
                    raw, ann = self.raw.latest(), self.annotated.latest()
                if self.raw.closed:
                    break
                lost = self.camera_lost()
                if lost is not None:
                    now = time.monotonic()
                    if self.mode != "camera_lost" or now - last_card >= self.lost_card_every_s:
                        last_card = now
                        size = raw.data.shape[:2] if raw is not None else (480, 640)
                        card = camera_lost_card(size, lost, raw.ts if raw is not None else time.time())
                        self.output.publish(encode_jpeg(card, self.jpeg_quality), meta=[])
                        self._set_mode("camera_lost", lost)
                    last_raw = raw.seq if raw is not None else 0
                    last_ann = ann.seq if ann is not None else 0
                    continue
                reason = self.offline_reason()
                fresh = reason is None and ann is not None and time.time() - ann.ts <= self.stale_after_s
                if fresh and ann is not None and ann.seq != last_ann:
                    self.output.publish(ann.data, ann.ts, meta=ann.meta)
                    self._set_mode("annotated")
                elif not fresh and raw is not None and raw.seq != last_raw:
                    now = time.monotonic()
                    if now - last_raw_shown >= self.min_period:
                        last_raw_shown = now
                        text = f"recognizer offline: {reason}" if reason else "recognizer not answering"
                        self.output.publish(encode_jpeg(draw_banner(raw.data, text), self.jpeg_quality), raw.ts, meta=[])
                        self._set_mode("raw", text)
                last_raw = raw.seq if raw is not None else 0
                last_ann = ann.seq if ann is not None else 0
        finally:
            self.output.close()
            log.info("display stopped")
