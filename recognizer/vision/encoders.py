"""Face encoding in worker processes.

dlib's descriptor network holds the GIL for its whole ~75 ms per face, so encoding in a thread
stalls every other station's I/O and uses one core. Workers each load the network once and take
batches of aligned 150x150 chips (67 KB each, cheap to send), so encodings of several stations
run on all cores while the station threads keep detecting (HOG releases the GIL).

Workers never outlive the recognizer, even when it is SIGKILLed: on Linux each asks the kernel for
SIGKILL when its parent dies (prctl PR_SET_PDEATHSIG), and everywhere a watchdog thread also polls
`os.getppid()` once a second and exits when the parent is gone. (PDEATHSIG fires when the *thread*
that started the worker ends, so it is only asked for when the pool is built in the main thread.)
"""
from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Callable, Optional, Protocol

import numpy as np

log = logging.getLogger(__name__)


class ChipEncoder(Protocol):
    def encode_chips(self, chips: np.ndarray) -> np.ndarray: ...


_worker_net = None  # per worker process only; set by _init_worker, never in the parent
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
PARENT_POLL_S = 1.0


def exit_with_parent(parent_pid: int, use_pdeathsig: bool = True, poll_s: float = PARENT_POLL_S) -> None:
    """Make this (child) process end when `parent_pid` dies: PDEATHSIG on Linux, plus a getppid() watchdog."""
    if use_pdeathsig and sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
                log.warning("prctl(PR_SET_PDEATHSIG) failed (errno %d); relying on the parent watchdog", ctypes.get_errno())
        except (OSError, AttributeError) as exc:
            log.warning("prctl unavailable (%s); relying on the parent watchdog", exc)
    if os.getppid() != parent_pid:  # the parent died before the death signal was armed
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(poll_s)
            if os.getppid() != parent_pid:  # re-parented: the recognizer is gone
                os._exit(1)

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()


def _init_worker(parent_pid: int, use_pdeathsig: bool) -> None:
    global _worker_net
    exit_with_parent(parent_pid, use_pdeathsig)
    import dlib

    from recognizer.vision.dlib_models import FACE_DESCRIPTOR, model_path

    _worker_net = dlib.face_recognition_model_v1(str(model_path(FACE_DESCRIPTOR)))


def _encode_in_worker(chips: np.ndarray) -> tuple[np.ndarray, float]:
    """The encodings of `chips` and the CPU seconds they cost this worker (the server's pacing counts them)."""
    if len(chips) == 0:
        return np.zeros((0, 128), np.float32), 0.0
    start = time.process_time()
    descriptors = _worker_net.compute_face_descriptor([np.ascontiguousarray(c) for c in chips], 0)
    return np.array([np.array(d) for d in descriptors], np.float32), time.process_time() - start


class EncoderPool:
    """A pool of processes that turn face chips (k,150,150,3) into encodings (k,128)."""

    def __init__(self, workers: Optional[int] = None) -> None:
        self.workers = workers or max(1, os.cpu_count() or 1)
        # told the CPU seconds of each encoding (the server's fair share counts them in a frame's cost)
        self.on_cost: Optional[Callable[[float], None]] = None
        # spawn: never fork a process that holds threads and sockets
        self._pool = ProcessPoolExecutor(
            self.workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker,
            initargs=(os.getpid(), threading.current_thread() is threading.main_thread()),
        )
        # load the network in every worker now, not on the first face
        for f in [self._pool.submit(_encode_in_worker, np.zeros((0, 150, 150, 3), np.uint8)) for _ in range(self.workers)]:
            f.result()
        log.info("encoder pool ready: %d worker processes", self.workers)

    def encode_chips(self, chips: np.ndarray) -> np.ndarray:
        if len(chips) == 0:
            return np.zeros((0, 128), np.float32)
        return self.submit_chips(chips).result()

    def submit_chips(self, chips: np.ndarray) -> "Future[np.ndarray]":
        """The encodings of `chips`, later: a station's frame goes on while a worker encodes (~80 ms a face)."""
        inner = self._pool.submit(_encode_in_worker, chips)
        outer: "Future[np.ndarray]" = Future()

        def done(f: Future) -> None:
            try:
                encodings, cpu_s = f.result()
            except BaseException as exc:  # noqa: BLE001 - handed to the caller, who logs it
                outer.set_exception(exc)
                return
            if self.on_cost is not None:
                self.on_cost(cpu_s)
            outer.set_result(encodings)

        inner.add_done_callback(done)
        return outer

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
