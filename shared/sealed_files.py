"""Bytes and files sealed at rest with a `KeyRing` (shared.crypto), or left as they are when no key is configured.

A sealed file keeps its name (an index's `sources` and the photos' paths stay valid) and starts with the ring's
magic `FME1`, so a reader tells sealed from plain by the bytes, never by a setting: a folder half-migrated, or a
plain file copied in later, still reads. A sealed value found while no key is configured is an error that names
what to set; a plain one found while a key is configured is read (and sealed by the next write or migration).
"""
from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Optional

from shared.crypto import ID_BYTES, MAGIC, DataKeyError, KeyRing, is_sealed, key_id

KEY_HINT = ("set the recognizer's data key: --data-key-file FILE (FACEMON_RECOGNIZER_DATA_KEY_FILE, a 0600 file) "
            "or FACEMON_DATA_KEY")


def seal(data: bytes, ring: Optional[KeyRing], purpose: str) -> bytes:
    """`data` sealed for `purpose` with the ring's current key; `data` itself when there is no ring."""
    return ring.seal(data, purpose) if ring is not None else data


def unseal(data: bytes, ring: Optional[KeyRing], purpose: str, where: str) -> bytes:
    """The plain bytes of `data` (sealed or plain); DataKeyError naming `where` when it is sealed and cannot open."""
    if not is_sealed(data):
        return data
    if ring is None:
        raise DataKeyError(f"{where} is encrypted and no data key is configured: {KEY_HINT}")
    try:
        return ring.open(data, purpose)
    except DataKeyError as exc:
        raise DataKeyError(f"{where}: {exc}") from None


def read(path: Path, ring: Optional[KeyRing], purpose: str) -> bytes:
    """A file's plain bytes (OSError when unreadable, DataKeyError when sealed and the ring cannot open it)."""
    return unseal(Path(path).read_bytes(), ring, purpose, str(path))


def write(path: Path, data: bytes, ring: Optional[KeyRing], purpose: str) -> None:
    """Write `data` (sealed when there is a ring) atomically: a temporary file in the same folder, fsynced, renamed."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(seal(data, ring, purpose))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def reseal(path: Path, ring: KeyRing, purpose: str) -> bool:
    """Seal a plain file, or seal a sealed one again with the ring's current key; True when it was rewritten."""
    raw = Path(path).read_bytes()
    if sealed_with(raw) == key_id(ring.current):
        return False  # already sealed with the current key
    write(path, unseal(raw, ring, purpose, str(path)), ring, purpose)
    return True


def sealed_with(data: bytes) -> Optional[bytes]:
    """The id of the key `data` was sealed with; None when it is plain."""
    return data[len(MAGIC):len(MAGIC) + ID_BYTES] if is_sealed(data) else None
