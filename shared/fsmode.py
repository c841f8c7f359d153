"""Private files by default: the umask every facemon program sets at start, and the check a secret file must pass.

Biometric data (encodings, photos, evidence) and secrets (keys, tokens, the database) are special-category or
credential data: files 0600, folders 0700. Each program calls `private_umask()` first thing in `main()`, so what
it creates is private whether it runs under systemd (UMask=0077 in the units too), a shell or a test.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

PRIVATE_UMASK = 0o077
FILE_MODE = 0o600
DIR_MODE = 0o700


class InsecureFile(PermissionError):
    """A secret file that other local users could read or change; the message says how to fix it."""


def private_umask() -> int:
    """Set the process umask to 0077 (files 0600, folders 0700); returns the previous one."""
    return os.umask(PRIVATE_UMASK)


def check_private(path: Path, what: str = "key file") -> None:
    """Raise InsecureFile when `path` is readable or writable by group or others (it must be 0600 or stricter)."""
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise InsecureFile(f"{what} {path} is mode {mode:04o}, readable by other users; "
                           f"run: chmod 600 {path}")


def loose_entries(root: Path) -> list[tuple[Path, int]]:
    """Every file under `root` (itself included) not 0600 and every folder not 0700, with its mode.

    Links are not followed; sockets and FIFOs are ignored."""
    out: list[tuple[Path, int]] = []
    for path in [root, *root.rglob("*")]:
        st = path.lstat()
        mode = stat.S_IMODE(st.st_mode)
        if stat.S_ISDIR(st.st_mode) and mode != DIR_MODE:
            out.append((path, mode))
        elif stat.S_ISREG(st.st_mode) and mode != FILE_MODE:
            out.append((path, mode))
    return out
