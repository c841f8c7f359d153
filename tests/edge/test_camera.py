"""Camera sources on a real clip, and clear errors for bad sources."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from edge.camera import CameraError, CaptureThread, VideoFileSource, open_source
from edge.frames import LatestFrame


def test_file_source_loops_past_the_end(clip: Path) -> None:
    source = VideoFileSource(str(clip), realtime=False)
    try:
        frames = [source.read() for _ in range(300)]  # the shipped clip has 275 frames
    finally:
        source.close()
    assert all(f is not None and f.ndim == 3 and f.shape[2] == 3 for f in frames)
    assert source.loops >= 1


def test_file_source_is_paced_to_the_files_fps(clip: Path) -> None:
    source = open_source(str(clip))
    try:
        source.read()
        start = time.monotonic()
        for _ in range(15):
            source.read()
        elapsed = time.monotonic() - start
    finally:
        source.close()
    expected = 15 / source.fps
    assert 0.8 * expected <= elapsed <= 1.5 * expected


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("", "no camera source"),
        ("/no/such/clip.mp4", "is not 'picamera'"),
        ("definitely-not-a-source", "is not 'picamera'"),
    ],
)
def test_bad_source_gives_a_clear_error(spec: str, words: str) -> None:
    with pytest.raises(CameraError, match=words):
        open_source(spec)


def test_undecodable_file_is_refused(tmp_path: Path) -> None:
    bogus = tmp_path / "notes.mp4"
    bogus.write_text("this is not a video\n")
    with pytest.raises(CameraError, match="cannot decode|no readable frame"):
        open_source(str(bogus))


def test_missing_webcam_is_refused() -> None:
    with pytest.raises(CameraError, match="cannot open webcam 97"):
        open_source("97")


def test_picamera_without_picamera2_says_how_to_install() -> None:
    try:
        import picamera2  # noqa: F401
    except ImportError:
        with pytest.raises(CameraError, match="apt install python3-picamera2"):
            open_source("picamera")
    else:
        pytest.skip("picamera2 is installed here")


def test_capture_thread_publishes_fresh_frames_and_closes_the_source(clip: Path) -> None:
    source = VideoFileSource(str(clip))
    output: LatestFrame = LatestFrame()
    stop = threading.Event()
    thread = CaptureThread(source, output, stop)
    thread.start()
    seqs = []
    last = 0
    for _ in range(5):
        frame = output.wait_for_frame(last, timeout=2)
        assert frame is not None and frame.data.ndim == 3
        seqs.append(frame.seq)
        last = frame.seq
    stop.set()
    thread.join(5)
    assert not thread.is_alive()
    assert seqs == sorted(set(seqs))
    assert not source._cap.isOpened()  # released in `finally`


class _DyingSource:
    """A real clip that stops giving frames when `dead` is set (a camera unplugged), and resumes after."""

    description = "test camera"

    def __init__(self, clip: Path) -> None:
        self.clip = VideoFileSource(str(clip))
        self.dead = threading.Event()
        self.last_error = None

    def read(self):
        if self.dead.is_set():
            self.last_error = "test camera: unplugged"
            time.sleep(0.05)
            return None
        self.last_error = None
        return self.clip.read()

    def close(self) -> None:
        self.clip.close()


def test_capture_health_says_lost_with_the_reason_and_ok_again(clip: Path) -> None:
    source = _DyingSource(clip)
    stop = threading.Event()
    thread = CaptureThread(source, LatestFrame(), stop, lost_after_s=0.5)
    assert thread.health().state == "starting"
    thread.start()
    try:
        deadline = time.monotonic() + 5
        while thread.health().state != "ok" and time.monotonic() < deadline:
            time.sleep(0.02)
        assert thread.health().state == "ok"
        source.dead.set()
        died = time.time()
        while thread.health().state != "lost" and time.monotonic() < deadline + 5:
            time.sleep(0.02)
        health = thread.health()
        assert health.state == "lost" and health.error == "test camera: unplugged"
        assert health.since <= died + 0.1 and health.last_frame_age_s >= 0.5
        source.dead.clear()
        while thread.health().state != "ok" and time.monotonic() < deadline + 10:
            time.sleep(0.02)
        assert thread.health().state == "ok" and thread.health().since > died
    finally:
        stop.set()
        thread.join(5)
