"""One way for tests (and benches) to run the product's programs as real processes and to find free loopback ports."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional, Sequence

if TYPE_CHECKING:
    import numpy as np

REPO = Path(__file__).resolve().parents[1]  # not from conftest: the benches use this module without pytest


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ManagedProcess:
    """A program started in its own process group, output to a log file; `stop()` ends the whole group.

    Ending the group (not only the process) also ends what the program started, such as the recognizer's
    encoder workers, so nothing outlives the test that started it.
    """

    def __init__(self, name: str, cmd: Sequence[str], log: Path, env: Optional[dict] = None) -> None:
        self.name, self.cmd, self.log = name, list(cmd), log
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc: Optional[subprocess.Popen] = None

    def start(self, ready: Callable[[], bool], timeout: float = 90) -> None:
        with open(self.log, "a") as out:
            self.proc = subprocess.Popen(self.cmd, cwd=REPO, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        deadline = time.time() + timeout
        while not ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.proc.returncode}:\n{self.output()[-4000:]}")
            if time.time() > deadline:
                self.stop()
                raise AssertionError(f"{self.name} not ready after {timeout} s:\n{self.output()[-4000:]}")
            time.sleep(0.2)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _signal_group(self, sig: int) -> None:
        assert self.proc is not None
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def kill(self) -> None:
        """SIGKILL the process only (what a crash looks like to the rest of the system)."""
        if self.alive():
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait()

    def stop(self, timeout: float = 15) -> None:
        """SIGTERM the group, then SIGKILL what is left of it."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        self._signal_group(signal.SIGKILL)  # children that outlived their parent
        self.proc.wait()


def read_mjpeg(url: str, n: int) -> "list[np.ndarray]":
    """Read `n` decoded frames from an MJPEG (multipart/x-mixed-replace) feed, as a browser would."""
    import cv2
    import numpy as np
    import requests

    frames: "list[np.ndarray]" = []
    with requests.get(url, stream=True, timeout=10) as r:
        assert r.headers["Content-Type"].startswith("multipart/x-mixed-replace")
        buf = b""
        for chunk in r.iter_content(65536):
            buf += chunk
            while (start := buf.find(b"\xff\xd8")) >= 0 and (end := buf.find(b"\xff\xd9", start)) >= 0:
                img = cv2.imdecode(np.frombuffer(buf[start:end + 2], np.uint8), cv2.IMREAD_COLOR)
                buf = buf[end + 2:]
                if img is not None:
                    frames.append(img)
                if len(frames) >= n:
                    return frames
    return frames
