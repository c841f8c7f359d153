"""Encryption at rest: AES-256-GCM (the `cryptography` package's AEAD) with keys kept outside the database.

A sealed value is `FME1 | key id (8 bytes) | nonce (12) | ciphertext+tag`; the key id is the first 8 bytes of the
key's SHA-256, so a value names the key that opens it and old keys can still open old values after a rotation.
The associated data is the value's purpose (`evidence`, `gallery.vector` ...), so a value copied into another
column does not open. A key ring is a file (0600, refused otherwise) or an environment variable holding one
key per line as base64 of 32 bytes; the first is the one new values are sealed with.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional

from shared.fsmode import InsecureFile, check_private

MAGIC = b"FME1"
KEY_BYTES = 32
NONCE_BYTES = 12
ID_BYTES = 8
HEADER = len(MAGIC) + ID_BYTES + NONCE_BYTES


class DataKeyError(ValueError):
    """The key ring cannot be used (missing, malformed, world-readable, or not the key the data was sealed with)."""


def key_id(key: bytes) -> bytes:
    return hashlib.sha256(key).digest()[:ID_BYTES]


def is_sealed(value: bytes) -> bool:
    return value[:len(MAGIC)] == MAGIC and len(value) >= HEADER + 16


@dataclass(frozen=True)
class KeyRing:
    """Keys by id; `current` seals, any opens."""

    keys: tuple[bytes, ...]

    def __post_init__(self) -> None:
        if not self.keys:
            raise DataKeyError("the key ring holds no key")
        for k in self.keys:
            if len(k) != KEY_BYTES:
                raise DataKeyError(f"a data key must be {KEY_BYTES} bytes (base64 of 32 random bytes), got {len(k)}")

    @property
    def current(self) -> bytes:
        return self.keys[0]

    def seal(self, plain: bytes, purpose: str) -> bytes:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        nonce = secrets.token_bytes(NONCE_BYTES)  # random 96-bit nonces: safe far beyond this system's volumes
        return MAGIC + key_id(self.current) + nonce + AESGCM(self.current).encrypt(nonce, plain, purpose.encode())

    def open(self, sealed: bytes, purpose: str) -> bytes:
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        if not is_sealed(sealed):
            raise DataKeyError("not a sealed value")
        kid = sealed[len(MAGIC):len(MAGIC) + ID_BYTES]
        for k in self.keys:
            if key_id(k) == kid:
                try:
                    return AESGCM(k).decrypt(sealed[len(MAGIC) + ID_BYTES:HEADER], sealed[HEADER:], purpose.encode())
                except InvalidTag:
                    raise DataKeyError(f"a {purpose} value does not open with its key (damaged, or moved from "
                                       "another column)") from None
        raise DataKeyError(f"a {purpose} value was sealed with key {kid.hex()}, which is not in the key ring "
                           f"(it holds {', '.join(key_id(k).hex() for k in self.keys)}): wrong key file?")

    def ids(self) -> list[str]:
        return [key_id(k).hex() for k in self.keys]


def new_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


def parse_ring(text: str, where: str) -> KeyRing:
    keys = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            keys.append(base64.b64decode(line, validate=True))
        except (binascii.Error, ValueError):
            raise DataKeyError(f"{where} line {n} is not base64") from None
    if not keys:
        raise DataKeyError(f"{where} holds no key")
    try:
        return KeyRing(tuple(keys))
    except DataKeyError as exc:
        raise DataKeyError(f"{where}: {exc}") from None


def load_ring(key_file: Optional[str], env: Mapping[str, str] = os.environ, env_name: str = "FACEMON_DATA_KEY"
              ) -> Optional[KeyRing]:
    """The key ring from `key_file` (must exist and be 0600) or from env `env_name`; None when neither is set."""
    if key_file:
        path = Path(key_file)
        try:
            check_private(path, "data key file")
            text = path.read_text()
        except FileNotFoundError:
            raise DataKeyError(f"data key file {path} does not exist (make one: facemon-dashboard data-key new "
                               f"--out {path})") from None
        except InsecureFile as exc:
            raise DataKeyError(str(exc)) from None
        return parse_ring(text, str(path))
    if env.get(env_name):
        return parse_ring(env[env_name].replace(",", "\n"), f"env {env_name}")
    return None


def write_ring(path: Path, ring: KeyRing) -> None:
    """Write `ring` to `path` as a 0600 file (replaced atomically)."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write("# facemon data keys: the first seals new data, the others only open old data. Keep a copy offline.\n")
        f.write("".join(base64.b64encode(k).decode() + "\n" for k in ring.keys))
    tmp.replace(path)
