"""Following the dashboard's gallery: every node loads it at start, keeps a local copy, and applies its changes.

The dashboard's database owns the gallery (dashboard/gallery.py): encodings with their provenance and a
numbered change log. A `GalleryStore` holds the live `FaceIndex` a node matches against, as `IndexStore` does
for a lab's `encodings/` folder (same `index` / `add`), and:

- at start reads its local copy (`index.npz` + `index.json` + `gallery.json` with the last change number), so
  a node starts, and is ready, while the dashboard is down;
- follows the change log by long-poll (`GET /api/gallery/changes?after=N&wait=S`): a change committed on the
  dashboard reaches every node within one round trip (measured: bench/pool.py), and the copy is rewritten after
  each batch;
- `add` (a Capture on this node, or facemon-enrol's import) posts the encoding with its provenance and applies
  the answer at once, so the capturing node knows the face before the others hear of it.

Applying a change is idempotent (encodings are keyed by their gallery id), so an `add` seen twice, by the
answer and by the change log, counts once.
"""
from __future__ import annotations

import base64
import hashlib
import json
import logging
import threading
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from recognizer.identity.index import DIM, MODEL_ID, FaceIndex, FaceIndexError, IndexMissing, load_index, save_index
from shared.backoff import Backoff
from shared.crypto import KeyRing
from shared.http import HttpError, Response, get, post_json

log = logging.getLogger(__name__)

CURSOR_NAME = "gallery.json"
WAIT_S = 20.0  # long-poll length; the dashboard answers at once when a change comes


class GalleryError(Exception):
    """The dashboard refused a gallery request; the text is its reason."""


@dataclass(frozen=True)
class Provenance:
    """Where an enrolled encoding came from: the desk of a Capture, who (the admin, or the importer), the grant,
    the photo's file (a folder import) and the enrolled face as a JPEG crop."""

    by: str = ""
    station: str = ""
    grant_id: Optional[int] = None
    source: str = ""
    photo_sha256: str = ""
    photo: bytes = b""


class GalleryClient:
    """The dashboard's gallery API with a service token."""

    def __init__(self, url: str, token: str, timeout_s: float = 10.0) -> None:
        self.url, self.token, self.timeout_s = url.rstrip("/"), token, timeout_s

    def _json(self, answer: Response, what: str) -> dict:
        body = answer.json()
        if not answer.ok or body is None:
            raise GalleryError(f"{what}: HTTP {answer.status}: {answer.reason()}")
        return body

    def changes(self, after: int, wait_s: float = 0.0, limit: int = 500) -> tuple[int, list[dict], bool]:
        """(head, changes numbered above `after`, more to fetch); waits up to `wait_s` for one. HttpError when
        the dashboard does not answer, GalleryError when it refuses (409: the copy follows another database)."""
        query = urllib.parse.urlencode({"after": after, "wait": wait_s, "limit": limit})
        answer = get(f"{self.url}/api/gallery/changes?{query}", self.token, self.timeout_s + wait_s)
        if answer.status == 409:
            raise CopyFromElsewhere(answer.reason())
        body = self._json(answer, "gallery changes")
        return int(body["head"]), list(body["changes"]), bool(body.get("more"))

    def add(self, person: str, encoding: np.ndarray, model: str, prov: Provenance) -> dict:
        """Post one encoding with its provenance; the `add` change the dashboard answers (new or the existing one)."""
        body = {
            "person": person, "vector": base64.b64encode(np.asarray(encoding, "<f4").tobytes()).decode(),
            "model": model, "source": prov.source or (f"capture:{prov.station}" if prov.station else "capture"),
            "photo_sha256": prov.photo_sha256, "enrolled_by": prov.by or "unknown",
            "station_id": prov.station or None, "grant_id": prov.grant_id,
        }
        if prov.photo:
            body["photo"] = base64.b64encode(prov.photo).decode()
        answer = post_json(f"{self.url}/api/gallery/encodings", body, self.token, self.timeout_s)
        return self._json(answer, f"enrolling {person!r} in the gallery")["change"]


class CopyFromElsewhere(GalleryError):
    """The local copy is ahead of the dashboard's gallery: it was taken from another database."""


def decode_vector(text: str) -> np.ndarray:
    raw = base64.b64decode(text, validate=True)
    if len(raw) != DIM * 4:
        raise ValueError(f"a vector of {len(raw)} bytes, not {DIM * 4}")
    return np.frombuffer(raw, "<f4").astype(np.float32)


class GalleryStore:
    """The live index of a pool node, following the dashboard's gallery (see the module's docstring)."""

    local_photos = False  # photos go to the dashboard with the encoding, never into a node's known_faces/

    def __init__(self, client: GalleryClient, cache_dir: Path, model: str = MODEL_ID, wait_s: float = WAIT_S,
                 on_change: Optional[Callable[[int], None]] = None, ring: Optional[KeyRing] = None) -> None:
        self.client, self.cache_dir, self.model, self.wait_s = client, Path(cache_dir), model, wait_s
        self.ring = ring  # seals the local copy's encodings at rest (None: plain)
        self._on_change = on_change
        self._lock = threading.Lock()
        self._rows: dict[int, tuple[str, np.ndarray, str]] = {}  # gallery id -> (person, encoding, source)
        self._negatives: dict[int, tuple[str, np.ndarray]] = {}  # gallery id -> (person it is NOT, encoding)
        self._seq = 0  # every change up to this one is applied
        self._index = FaceIndex.empty()
        self._loaded = threading.Event()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    # -- what the pipeline and the server use --
    @property
    def index(self) -> FaceIndex:
        return self._index

    @property
    def loaded(self) -> bool:
        """A gallery is in memory: the local copy was read, or the dashboard's was fetched to its head."""
        return self._loaded.is_set()

    @property
    def seq(self) -> int:
        return self._seq

    def reload_if_changed(self) -> bool:
        """The server's index poll: nothing to do, changes arrive by the follower."""
        return False

    def add(self, name: str, encodings: np.ndarray, sources: Sequence[str],
            provenance: Optional[Provenance] = None) -> FaceIndex:
        """Enrol `encodings` of `name` in the dashboard's gallery and apply them here at once."""
        prov = provenance or Provenance()
        for encoding, source in zip(np.asarray(encodings, np.float32).reshape(-1, DIM), sources):
            change = self.client.add(name, encoding, self.model, prov if prov.source else _with_source(prov, source))
            self._apply([change], advance=False)
        return self._index

    # -- lifecycle --
    def start(self) -> None:
        self._read_copy()
        self._thread = threading.Thread(target=self._follow, name="gallery-follow", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop following. A long-poll in flight is not waited for: its answer is dropped when it comes."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)

    def wait_loaded(self, timeout_s: float) -> bool:
        return self._loaded.wait(timeout_s)

    # -- the local copy --
    def _read_copy(self) -> None:
        try:
            index = load_index(self.cache_dir, self.model, self.ring)
            cursor = json.loads((self.cache_dir / CURSOR_NAME).read_text())
            ids, seq = [int(i) for i in cursor["ids"]], int(cursor["seq"])
            neg_ids = [int(i) for i in cursor.get("negative_ids", [])]
            if len(ids) != len(index) or len(neg_ids) != len(index.negative_names):
                raise ValueError(f"{len(ids)} ids for {len(index)} encodings")
        except (IndexMissing, FileNotFoundError):
            log.info("no local copy of the gallery in %s yet: waiting for the dashboard", self.cache_dir)
            return
        except (FaceIndexError, OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring the local copy of the gallery in %s (%s): fetching it whole", self.cache_dir, exc)
            return
        with self._lock:
            self._rows = {i: (n, e, s) for i, n, e, s in zip(ids, index.names, index.encodings, index.sources)}
            self._negatives = {i: (n, e) for i, n, e in zip(neg_ids, index.negative_names, index.negatives)}
            self._seq, self._index = seq, index
        self._loaded.set()
        log.info("gallery: local copy at change %d, %d encodings of %d people", seq, len(index), len(index.people))

    def _write_copy(self) -> None:
        with self._lock:
            index, ids, neg_ids, seq = self._index, sorted(self._rows), sorted(self._negatives), self._seq
        try:
            save_index(index, self.cache_dir, self.ring)
            tmp = self.cache_dir / f".{CURSOR_NAME}.tmp"
            tmp.write_text(json.dumps({"seq": seq, "ids": ids, "negative_ids": neg_ids, "dashboard": self.client.url}))
            tmp.replace(self.cache_dir / CURSOR_NAME)
        except OSError as exc:  # the copy is for the next start; this one keeps working
            log.error("cannot write the local copy of the gallery to %s: %s", self.cache_dir, exc)

    # -- following --
    def _apply(self, changes: list[dict], advance: bool) -> bool:
        """Apply changes in order; True if the index changed. `advance`: they are the log's next ones."""
        changed = False
        with self._lock:
            for ch in changes:
                seq, op, person = int(ch["seq"]), ch.get("op"), str(ch.get("person", ""))
                if op == "add" and "vector" in ch and int(ch["id"]) not in self._rows:
                    if ch.get("model") != self.model:
                        log.error("gallery change %d: %r was encoded with model %r, not %r; skipped", seq, person,
                                  ch.get("model"), self.model)
                    else:
                        self._rows[int(ch["id"])] = (person, decode_vector(ch["vector"]), str(ch.get("source", "")))
                        changed = True
                elif op == "not" and "vector" in ch and int(ch["id"]) not in self._negatives:
                    self._negatives[int(ch["id"])] = (person, decode_vector(ch["vector"]))
                    changed = True
                elif op == "drop":
                    gone = self._rows.pop(int(ch["id"]), None) or self._negatives.pop(int(ch["id"]), None)
                    changed = changed or gone is not None
                elif op == "remove":
                    gone = [i for i, row in self._rows.items() if row[0] == person]
                    for i in gone:
                        del self._rows[i]
                    negs = [i for i, row in self._negatives.items() if row[0] == person]
                    for i in negs:
                        del self._negatives[i]
                    changed = changed or bool(gone) or bool(negs)
                if advance:
                    self._seq = max(self._seq, seq)
            if changed:
                self._index = _index_of(self._rows, self._negatives, self._index.created)
        if changed and self._on_change is not None:
            self._on_change(len(self._index))
        return changed

    def _follow(self) -> None:
        backoff = Backoff(0.5, 10.0, 0.2)
        failing = False
        while not self._stop.is_set():
            try:
                head, changes, more = self.client.changes(self._seq, 0.0 if not self.loaded else self.wait_s)
            except CopyFromElsewhere as exc:
                log.error("gallery: %s; dropping the local copy", exc)
                with self._lock:
                    self._rows, self._negatives, self._seq, self._index = {}, {}, 0, FaceIndex.empty()
                continue
            except (HttpError, GalleryError, ValueError, KeyError, TypeError) as exc:
                delay = backoff.next_delay()
                if not failing:
                    log.warning("gallery: the dashboard does not answer (%s); %s, retrying", exc,
                                "working from the local copy" if self.loaded else "no gallery yet")
                failing = True
                self._stop.wait(delay)
                continue
            if self._stop.is_set():
                return
            if failing:
                log.info("gallery: the dashboard answers again")
            failing = False
            backoff.reset()
            try:
                self._apply(changes, advance=True)
            except (ValueError, KeyError, TypeError) as exc:  # a malformed change: say which, retry later
                log.error("gallery: a change after %d cannot be applied (%s); retrying", self._seq, exc)
                self._stop.wait(backoff.next_delay())
                continue
            if not more and (changes or not self.loaded):
                self._write_copy()
            if changes:
                log.info("gallery: at change %d of %d, %d encodings", self._seq, head, len(self._index))
            if not more and not self.loaded:
                self._loaded.set()


def _with_source(prov: Provenance, source: str) -> Provenance:
    return Provenance(prov.by, prov.station, prov.grant_id, source, prov.photo_sha256, prov.photo)


def _index_of(rows: dict[int, tuple[str, np.ndarray, str]], negatives: dict[int, tuple[str, np.ndarray]],
              created: str) -> FaceIndex:
    ordered = [rows[i] for i in sorted(rows)]
    negs = [negatives[i] for i in sorted(negatives)]
    return FaceIndex(tuple(r[0] for r in ordered),
                     np.stack([r[1] for r in ordered]).astype(np.float32) if ordered else np.zeros((0, DIM), np.float32),
                     tuple(r[2] for r in ordered), MODEL_ID, created, tuple(n[0] for n in negs),
                     np.stack([n[1] for n in negs]).astype(np.float32) if negs else None)


def photo_digest(image: bytes) -> str:
    """The SHA-256 a photo is known by in the gallery (the same photo imported twice is one encoding)."""
    return hashlib.sha256(image).hexdigest()
