"""The enrolled-face index: 128-D encodings with their person names, stored as `.npz` + JSON manifest.

Layout of an index directory (default `encodings/`)::

    index.npz   arrays: encodings (N,128) float32, names (N,) str, sources (N,) str   (no pickle)
    index.json  manifest: format, model, count, people, created, updated, npz_sha256

With a data key (`shared.crypto.KeyRing`) the npz is sealed at rest (`shared.sealed_files`) and the manifest
names the key and leaves the people's names out (`people_count` instead); a sealed index without the key is
refused with a message naming the setting.

An index built with another face model is refused (distances between models mean nothing).
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
import logging
import os
import threading
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from shared import sealed_files
from shared.crypto import DataKeyError, KeyRing
from shared.lognames import who

log = logging.getLogger(__name__)

MODEL_ID = "dlib_face_recognition_resnet_model_v1"
FORMAT_VERSION = 1
NPZ_NAME = "index.npz"
MANIFEST_NAME = "index.json"
DIM = 128
PURPOSE = "gallery.index"  # what a sealed index.npz is sealed for (shared.crypto's associated data)


class FaceIndexError(Exception):
    """Base class for index problems."""


class IndexMissing(FaceIndexError):
    """No index has been built in that directory yet."""


class IndexCorrupt(FaceIndexError):
    """The index files exist but cannot be read consistently."""


class IndexModelMismatch(FaceIndexError):
    """The index was built with another face model."""


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).astimezone().isoformat(timespec="seconds")


@dataclass(frozen=True)
class LabelArrays:
    """Integer view of an index for vectorised matching, built once per index (see `FaceIndex.arrays`).

    Encodings are grouped by person so per-person minima and vote counts are one `reduceat` each.
    """

    people: tuple[str, ...]  # label -> name, in order of first enrolment
    labels: np.ndarray  # (N,) int32 label of each encoding, in the grouped order
    counts: np.ndarray  # (P,) int32 enrolled encodings per person
    starts: np.ndarray  # (P,) int64 first position of each person in the grouped order
    grouped: np.ndarray  # (N, 128) float32 encodings grouped by person (a view when already grouped)
    sq_norms: np.ndarray  # (N,) float32 squared norms of `grouped`
    centroids: np.ndarray  # (P, 128) float32 each person's mean encoding (their prototype)
    centroid_sq: np.ndarray  # (P,) float32 squared norms of `centroids`

    @classmethod
    def build(cls, names: Sequence[str], encodings: np.ndarray) -> "LabelArrays":
        """Label `names` by first appearance and group `encodings` (N,128) by label."""
        first: dict[str, int] = {}
        raw = np.fromiter((first.setdefault(n, len(first)) for n in names), np.int32, len(names))
        if np.all(raw[1:] >= raw[:-1]):  # enrolled person by person: no copy needed
            labels, grouped = raw, encodings
        else:
            order = np.argsort(raw, kind="stable")
            labels, grouped = raw[order], np.ascontiguousarray(encodings[order])
        counts = np.bincount(labels, minlength=len(first)).astype(np.int32)
        starts = (np.cumsum(counts) - counts).astype(np.int64)
        sq = np.einsum("ij,ij->i", grouped, grouped).astype(np.float32)
        if len(first):
            centroids = (np.add.reduceat(grouped.astype(np.float64), starts, axis=0) / counts[:, None]).astype(np.float32)
        else:
            centroids = np.zeros((0, grouped.shape[1] if grouped.ndim == 2 else 128), np.float32)
        csq = np.einsum("ij,ij->i", centroids, centroids).astype(np.float32)
        return cls(tuple(first), labels, counts, starts, grouped, sq, centroids, csq)


@dataclass(frozen=True)
class FaceIndex:
    """An immutable set of enrolled encodings; `add` returns a new index."""

    names: tuple[str, ...]
    encodings: np.ndarray  # (N, 128) float32
    sources: tuple[str, ...]
    model: str = MODEL_ID
    created: str = ""
    negative_names: tuple[str, ...] = ()
    """Negatives: faces that are NOT the named person (a reviewer's "not X"); the matcher does not accept a face
    as X when it is closer to one of X's negatives than to X (recognizer/identity/match.py)."""
    negatives: Optional[np.ndarray] = None  # (M, 128) float32, one row per `negative_names`

    def __post_init__(self) -> None:
        if self.encodings.shape != (len(self.names), DIM) or len(self.sources) != len(self.names):
            raise ValueError(
                f"index arrays disagree: {self.encodings.shape} encodings, {len(self.names)} names, "
                f"{len(self.sources)} sources"
            )
        if self.negatives is None:
            object.__setattr__(self, "negatives", np.zeros((0, DIM), np.float32))
        if self.negatives.shape != (len(self.negative_names), DIM):
            raise ValueError(f"index negatives disagree: {self.negatives.shape} for {len(self.negative_names)} names")

    @classmethod
    def empty(cls) -> "FaceIndex":
        return cls((), np.zeros((0, DIM), np.float32), (), MODEL_ID, _now())

    def __len__(self) -> int:
        return len(self.names)

    @cached_property
    def arrays(self) -> LabelArrays:
        """Integer labels, per-person counts and grouped encodings, computed once (the index is immutable)."""
        return LabelArrays.build(self.names, self.encodings)

    @cached_property
    def memo(self) -> dict:
        """Figures derived from this (immutable) index by other modules, e.g. per-person thresholds."""
        return {}

    @property
    def people(self) -> list[str]:
        """Distinct enrolled names, sorted."""
        return sorted(set(self.names))

    def add(self, name: str, encodings: np.ndarray, sources: Sequence[str]) -> "FaceIndex":
        """Return a new index with `encodings` (k,128) of `name` appended."""
        encodings = np.asarray(encodings, np.float32).reshape(-1, DIM)
        return FaceIndex(
            self.names + (name,) * len(encodings),
            np.concatenate([self.encodings, encodings]),
            self.sources + tuple(sources),
            self.model,
            self.created or _now(),
            self.negative_names,
            self.negatives,
        )


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def save_index(index: FaceIndex, directory: Path, ring: Optional[KeyRing] = None) -> None:
    """Write the index atomically (npz first, then the manifest that names its hash), sealed when `ring` is given."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    np.savez(
        buf,
        encodings=index.encodings.astype(np.float32),
        names=np.array(index.names, dtype=str),
        sources=np.array(index.sources, dtype=str),
        negatives=index.negatives.astype(np.float32),
        negative_names=np.array(index.negative_names, dtype=str),
    )
    data = sealed_files.seal(buf.getvalue(), ring, PURPOSE)
    _atomic_write(directory / NPZ_NAME, data)
    manifest = {
        "format": FORMAT_VERSION,
        "model": index.model,
        "dim": DIM,
        "count": len(index),
        **({"people": index.people} if ring is None else {"people_count": len(index.people),
                                                          "sealed_with": ring.ids()[0]}),
        "created": index.created or _now(),
        "updated": _now(),
        "npz_sha256": hashlib.sha256(data).hexdigest(),
    }
    _atomic_write(directory / MANIFEST_NAME, json.dumps(manifest, indent=2).encode())


def load_index(directory: Path, model: str = MODEL_ID, ring: Optional[KeyRing] = None) -> FaceIndex:
    """Read an index (sealed or plain); raise IndexMissing, IndexCorrupt, IndexModelMismatch or DataKeyError (sealed,
    and `ring` is None or does not open it) with a clear message."""
    directory = Path(directory)
    manifest_path, npz_path = directory / MANIFEST_NAME, directory / NPZ_NAME
    if not manifest_path.exists():
        raise IndexMissing(f"no face index in {directory}: build one with `facemon-enrol`")
    try:
        manifest = json.loads(manifest_path.read_text())
        data = npz_path.read_bytes()
    except (OSError, ValueError) as exc:
        raise IndexCorrupt(f"cannot read the face index in {directory}: {exc}") from exc
    if manifest.get("model") != model:
        raise IndexModelMismatch(
            f"the face index in {directory} was built with model {manifest.get('model')!r}, "
            f"but this recognizer uses {model!r}: rebuild it with `facemon-enrol`"
        )
    if manifest.get("npz_sha256") != hashlib.sha256(data).hexdigest():
        raise IndexCorrupt(f"{npz_path} does not match its manifest (written while we read? rebuild if it persists)")
    data = sealed_files.unseal(data, ring, PURPOSE, f"the face index {npz_path}")
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            encodings = npz["encodings"].astype(np.float32)
            names = tuple(str(n) for n in npz["names"])
            sources = tuple(str(s) for s in npz["sources"])
            negatives = npz["negatives"].astype(np.float32).reshape(-1, DIM) if "negatives" in npz else None
            negative_names = tuple(str(n) for n in npz["negative_names"]) if "negative_names" in npz else ()
        return FaceIndex(names, encodings.reshape(-1, DIM), sources, model, manifest.get("created", ""),
                         negative_names, negatives)
    except (ValueError, KeyError, OSError) as exc:
        raise IndexCorrupt(f"cannot parse {npz_path}: {exc}") from exc


class IndexStore:
    """Thread-safe holder of the live index: reloads it when the files change, persists additions."""

    def __init__(self, directory: Path, model: str = MODEL_ID, ring: Optional[KeyRing] = None) -> None:
        self.directory = Path(directory)
        self.model = model
        self.ring = ring  # seals the index at rest (None: plain)
        self._lock = threading.Lock()
        self._stamp: Optional[tuple[int, int]] = None
        self._index = FaceIndex.empty()
        self.reload_if_changed()

    def _file_stamp(self) -> Optional[tuple[int, int]]:
        try:
            st = (self.directory / MANIFEST_NAME).stat()
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_size)

    @property
    def index(self) -> FaceIndex:
        return self._index

    def reload_if_changed(self) -> bool:
        """Reload the index if its manifest changed on disk; True if a new index was loaded.

        A bad index on disk is logged and the previous one kept, so a half-written or
        foreign index never takes the recognizer down.
        """
        stamp = self._file_stamp()
        if stamp == self._stamp:
            return False
        with self._lock:
            if stamp is None:
                self._stamp = None
                log.warning("no face index in %s yet: every face is unknown until people are enrolled", self.directory)
                return False
            try:
                index = load_index(self.directory, self.model, self.ring)
            except IndexMissing:
                return False
            except (FaceIndexError, DataKeyError) as exc:
                log.error("keeping the previous face index: %s", exc)
                self._stamp = stamp  # don't retry until it changes again
                return False
            self._index, self._stamp = index, stamp
        log.info("loaded face index: %d encodings of %d people", len(index), len(index.people))
        return True

    local_photos = True  # a lab's photos stay in known_faces/ next to encodings/ (a pool's go to the dashboard)

    def add(self, name: str, encodings: np.ndarray, sources: Sequence[str], provenance: object = None) -> FaceIndex:
        """Append encodings of `name`, persist atomically, and return the new index (`provenance`: a gallery's)."""
        with self._lock:
            index = self._index.add(name, encodings, sources)
            save_index(index, self.directory, self.ring)
            self._index, self._stamp = index, self._file_stamp()
        log.info("enrolled %s: index now holds %d encodings", who(name), len(index))
        return index
