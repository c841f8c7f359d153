"""Face encoding in worker processes.

dlib's descriptor network holds the GIL for its whole ~75 ms per face, so encoding in a thread
stalls every other station's I/O and uses one core. Workers each load the network once and take
batches of aligned 150x150 chips (67 KB each, cheap to send), so encodings of several stations
run on all cores while the station threads keep detecting (HOG releases the GIL).
"""
from __future__ import annotations

import logging
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from typing import Optional, Protocol

import numpy as np

log = logging.getLogger(__name__)


class ChipEncoder(Protocol):
    def encode_chips(self, chips: np.ndarray) -> np.ndarray: ...


_worker_net = None  # per worker process only; set by _init_worker, never in the parent


def _init_worker() -> None:
    global _worker_net
    import dlib

    from recognizer.models_path import FACE_DESCRIPTOR, model_path

    _worker_net = dlib.face_recognition_model_v1(str(model_path(FACE_DESCRIPTOR)))


def _encode_in_worker(chips: np.ndarray) -> np.ndarray:
    if len(chips) == 0:
        return np.zeros((0, 128), np.float32)
    descriptors = _worker_net.compute_face_descriptor([np.ascontiguousarray(c) for c in chips], 0)
    return np.array([np.array(d) for d in descriptors], np.float32)


class EncoderPool:
    """A pool of processes that turn face chips (k,150,150,3) into encodings (k,128)."""

    def __init__(self, workers: Optional[int] = None) -> None:
        self.workers = workers or max(1, os.cpu_count() or 1)
        # spawn: never fork a process that holds threads and sockets
        self._pool = ProcessPoolExecutor(
            self.workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker
        )
        # load the network in every worker now, not on the first face
        for f in [self._pool.submit(_encode_in_worker, np.zeros((0, 150, 150, 3), np.uint8)) for _ in range(self.workers)]:
            f.result()
        log.info("encoder pool ready: %d worker processes", self.workers)

    def encode_chips(self, chips: np.ndarray) -> np.ndarray:
        if len(chips) == 0:
            return np.zeros((0, 128), np.float32)
        return self._pool.submit(_encode_in_worker, chips).result()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
