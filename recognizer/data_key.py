"""The recognizer's data key: its files at rest (the face index or gallery copy, captured photos, the outbox).

At start (`prepare`, before any model loads): with no key and sealed files present, or with a key that does not
open them, or a key file readable by others, the recognizer refuses with a sentence naming what to set. With a key,
files a keyless run left plain are sealed there and then (the migration), and the count is logged. `rotate` seals
every file with a fresh key: the new key goes first in the key file (a crash midway leaves a file that opens both),
each file is sealed again, then the old keys are dropped. Run it with the recognizer stopped.

    facemon-recognizer data-key new --out FILE
    facemon-recognizer data-key rotate --data-key-file FILE [--index DIR] [--known-faces DIR] [--outbox FILE]

On a box where the dashboard shares the key file, `facemon-dashboard data-key rotate --recognizer-index DIR
--recognizer-known-faces DIR --recognizer-outbox FILE` rotates both in one go.
"""
from __future__ import annotations

import argparse
import logging
import sqlite3
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence

from shared import sealed_files
from shared.crypto import DataKeyError, KeyRing, key_id, load_ring, new_key, write_ring

log = logging.getLogger(__name__)
ENV_FILE = "FACEMON_RECOGNIZER_DATA_KEY_FILE"


@dataclass(frozen=True)
class RecognizerFiles:
    """Where a recognizer keeps person data on disk (any may be absent)."""

    index_dir: Optional[Path] = None
    known_faces: Optional[Path] = None
    outbox: Optional[Path] = None

    @classmethod
    def of(cls, settings) -> "RecognizerFiles":  # noqa: ANN001 - RecognizerSettings
        # the outbox only when alerts are delivered (without a sink it is never opened)
        sinks = settings.dashboard is not None or bool(settings.webhook_url)
        return cls(settings.index_dir, settings.known_faces, settings.outbox.path if sinks else None)


def load(key_file: str) -> Optional[KeyRing]:
    """The ring from `key_file` or FACEMON_DATA_KEY; None when neither is set (DataKeyError: unusable)."""
    if key_file and not Path(key_file).exists():
        raise DataKeyError(f"data key file {key_file} does not exist (make one: facemon-recognizer data-key new "
                           f"--out {key_file}; --data-key-file / {ENV_FILE} name it)")
    return load_ring(key_file or None)


def _photos(folder: Optional[Path]) -> Iterator[Path]:
    from recognizer.identity.enrol import IMAGE_SUFFIXES

    if folder is None or not folder.is_dir():
        return
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith("."):
            yield path


def prepare(ring: Optional[KeyRing], files: RecognizerFiles) -> Optional[KeyRing]:
    """Check `ring` against the files (DataKeyError with what to set) and seal what is plain; returns `ring`."""
    counts = _walk(ring, files, rotate=False)
    if ring is None:
        log.warning("no data key configured: the face index, captured photos and the outbox are stored unencrypted "
                    "(facemon-recognizer data-key new --out FILE; --data-key-file FILE or %s)", ENV_FILE)
    elif any(counts.values()):
        log.info("data key %s: sealed what a run without a key had left plain: %s", ring.ids()[0],
                 ", ".join(f"{v} {k}" for k, v in counts.items() if v))
    else:
        log.info("data key %s: the face index, captured photos and the outbox are sealed at rest", ring.ids()[0])
    return ring


def reseal_all(ring: KeyRing, files: RecognizerFiles) -> dict[str, int]:
    """Seal every file with the ring's current key (the others in the ring open the old ones); counts per kind."""
    return _walk(ring, files, rotate=True)


def _walk(ring: Optional[KeyRing], files: RecognizerFiles, rotate: bool) -> dict[str, int]:
    from recognizer.alerting.outbox import reseal_rows
    from recognizer.identity.enrol import PHOTO_PURPOSE
    from recognizer.identity.index import NPZ_NAME, PURPOSE, FaceIndexError, load_index, save_index

    counts = {"index": 0, "photos": 0, "outbox values": 0}
    npz = files.index_dir / NPZ_NAME if files.index_dir is not None else None
    if npz is not None and npz.exists():
        raw = npz.read_bytes()
        kid = sealed_files.sealed_with(raw)
        if ring is None and kid is not None:
            raise DataKeyError(f"the face index {npz} is encrypted and no data key is configured: "
                               f"{sealed_files.KEY_HINT}")
        if ring is not None:
            sealed_files.unseal(raw, ring, PURPOSE, f"the face index {npz}")  # a wrong key fails here
            if kid is None or (rotate and kid != key_id(ring.current)):
                try:
                    index = load_index(files.index_dir, ring=ring)
                except FaceIndexError as exc:  # the recognizer says what is wrong with it when it loads it
                    log.warning("data key: the face index in %s is not sealed: %s", files.index_dir, exc)
                else:
                    save_index(index, files.index_dir, ring)  # the manifest drops the names with it
                    counts["index"] = 1
    checked = False
    for path in _photos(files.known_faces):
        raw = path.read_bytes()
        kid = sealed_files.sealed_with(raw)
        if ring is None:
            if kid is not None:
                raise DataKeyError(f"the photo {path} is encrypted and no data key is configured: "
                                   f"{sealed_files.KEY_HINT}")
            continue
        if kid is not None and (not rotate or kid == key_id(ring.current)):
            if not checked:  # one is enough to tell a wrong key
                sealed_files.unseal(raw, ring, PHOTO_PURPOSE, f"the photo {path}")
                checked = True
            continue
        sealed_files.write(path, sealed_files.unseal(raw, ring, PHOTO_PURPOSE, f"the photo {path}"), ring,
                           PHOTO_PURPOSE)
        counts["photos"] += 1
    if files.outbox is not None and files.outbox.exists():
        db = sqlite3.connect(str(files.outbox), isolation_level=None, timeout=30)
        try:
            db.execute("PRAGMA secure_delete=ON")  # the plain bytes replaced do not stay in freed pages
            counts["outbox values"] = reseal_rows(db, ring, only_plain=not rotate)
            if counts["outbox values"]:
                db.execute("VACUUM")
        except sqlite3.DatabaseError as exc:  # a damaged outbox is the outbox's own business at its start
            log.warning("data key: cannot check the outbox %s now (%s); it is checked when it opens", files.outbox, exc)
        finally:
            db.close()
    return counts


def rotate(key_file: Path, files: RecognizerFiles) -> tuple[str, dict[str, int]]:
    """Seal every file with a fresh key in `key_file` and drop the old keys; (new key id, counts)."""
    old = load_ring(str(key_file)) if key_file.exists() else None
    ring = KeyRing((new_key(), *(old.keys if old else ())))
    write_ring(key_file, ring)  # first: a crash midway leaves a file that opens both old and new values
    counts = reseal_all(ring, files)
    write_ring(key_file, KeyRing((ring.current,)))
    return ring.ids()[0], counts


def main(argv: Optional[Sequence[str]] = None) -> int:
    """`facemon-recognizer data-key new|rotate`."""
    import os

    from recognizer.settings import setting
    from shared.fsmode import private_umask

    private_umask()
    p = argparse.ArgumentParser(prog="facemon-recognizer data-key", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=("new", "rotate"))
    p.add_argument("--out", "--data-key-file", dest="key_file", type=Path,
                   default=Path(os.environ[ENV_FILE]) if os.environ.get(ENV_FILE) else None,
                   help=f"the key file (default: env {ENV_FILE})")
    p.add_argument("--index", type=Path, default=Path(setting("index_dir").default), help="the face index folder")
    p.add_argument("--known-faces", type=Path, default=Path(setting("known_faces").default),
                   help="the captured photos' folder")
    p.add_argument("--outbox", type=Path, default=Path(setting("outbox.path").default), help="the outbox file")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.key_file is None:
        print(f"facemon-recognizer data-key: say where the key file is: --out FILE or {ENV_FILE}", file=sys.stderr)
        return 2
    try:
        if args.action == "new":
            if args.key_file.exists():
                print(f"facemon-recognizer data-key: {args.key_file} exists; a new key would make its data "
                      "unreadable (rotate instead)", file=sys.stderr)
                return 2
            args.key_file.parent.mkdir(parents=True, exist_ok=True)
            ring = KeyRing((new_key(),))
            write_ring(args.key_file, ring)
            print(f"data key {ring.ids()[0]} written to {args.key_file} (0600); set {ENV_FILE}={args.key_file} and "
                  "keep a copy offline: without it the data cannot be read")
            return 0
        kid, counts = rotate(args.key_file, RecognizerFiles(args.index, args.known_faces, args.outbox))
    except (DataKeyError, OSError) as exc:
        print(f"facemon-recognizer data-key: {exc}", file=sys.stderr)
        return 1
    print(f"rotated to data key {kid} in {args.key_file}: re-sealed " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    return 0

