"""Damage to the outbox file, noticed and repaired with as little loss as possible (the queue is `outbox.py`).

- A file **deleted or replaced** while running: SQLite keeps writing to the unlinked inode without a word, and all
  of it would be gone at the next start. The open connection still reads it, so `recreate` backs it up into a new
  file at the path: nothing is lost. Someone else's file found at the path is moved aside for inspection.
- A **damaged** file (not a database, malformed, at start or while running): `replace_damaged` moves it aside as
  `<name>.corrupt-<time>`, starts a fresh file and copies in the rows that can still be read (`salvage`).

Every repair says what it did in one ERROR line. The functions take the queue's `connect` (open and check a
file) and return the new connection; they never decide anything about delivery.
"""
from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

from shared.crypto import is_sealed

log = logging.getLogger(__name__)

SIDE_FILES = ("-wal", "-shm", "-journal")  # what SQLite keeps next to the file, in either journal mode


def file_id(path: Path) -> Optional[tuple[int, int]]:
    """(device, inode) of the file at `path`, None when there is none: tells a replaced file from ours."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


def move_aside(path: Path, tag: str) -> Path:
    """Rename the file (and its side files) to `<name>.<tag>-<YYYYmmdd-HHMMSS>`; returns the new path."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    dst = path.with_name(f"{path.name}.{tag}-{stamp}")
    n = 1
    while dst.exists():
        n += 1
        dst = path.with_name(f"{path.name}.{tag}-{stamp}-{n}")
    for suffix in ("", *SIDE_FILES):
        src = Path(f"{path}{suffix}")
        if suffix and src.exists() and src.stat().st_size == 0:  # an empty journal says nothing: not kept
            src.unlink()
        elif src.exists():
            os.replace(src, f"{dst}{suffix}")
    return dst


def replace_damaged(path: Path, old: Optional[sqlite3.Connection], exc: Exception,
                    connect: Callable[[], sqlite3.Connection], tables: Sequence[tuple[str, Sequence[str], str, str]]
                    ) -> sqlite3.Connection:
    """The file is damaged: move it aside, open a fresh one, copy in the rows that can still be read.

    `tables`: (table, columns, WHERE of the rows worth keeping, the JSON column each row must parse in).
    """
    if old is not None:
        try:
            old.close()
        except sqlite3.Error:
            pass
    aside = move_aside(path, "corrupt")
    db = connect()
    saved, lost = salvage(aside, db, tables)
    log.error("OUTBOX DAMAGED: %s could not be used (%s); moved it to %s and started a fresh outbox. Salvaged %d "
              "pending event(s) and %d open incident(s); %d row(s) could not be read and are lost",
              path, exc, aside.name, saved[0], saved[1] if len(saved) > 1 else 0, lost)
    return db


def recreate(path: Path, db: sqlite3.Connection, connect: Callable[[], sqlite3.Connection]) -> sqlite3.Connection:
    """The file at `path` is no longer the one `db` has open: write what `db` reads into a new file there.

    Returns the connection to the new file (the old one is closed). Raises OSError/sqlite3.Error when it cannot.
    """
    replaced = move_aside(path, "replaced") if file_id(path) is not None else None  # someone else's: kept
    path.parent.mkdir(parents=True, exist_ok=True)  # the whole folder may have gone
    tmp = path.with_name(path.name + ".recovering")
    tmp.unlink(missing_ok=True)
    copy = sqlite3.connect(str(tmp))
    try:
        db.backup(copy)
    finally:
        copy.close()
    db.close()
    for suffix in SIDE_FILES:  # the deleted file's, left behind: they would be replayed into the new one
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    os.replace(tmp, path)
    new = connect()
    pending = new.execute("SELECT COUNT(*) FROM outbox WHERE delivered_at IS NULL").fetchone()[0]
    held = new.execute("SELECT COUNT(*) FROM open_incidents").fetchone()[0]
    log.error("OUTBOX FILE %s while running: %s; recreated it with the %d pending event(s) and %d open "
              "incident(s) still held, nothing lost", "REPLACED" if replaced else "DELETED", path, pending, held)
    if replaced is not None:
        log.error("the file found in its place was moved to %s", replaced)
    return new


def salvage(src_path: Path, dst: sqlite3.Connection, tables: Sequence[tuple[str, Sequence[str], str, str]]
            ) -> tuple[list[int], int]:
    """Copy the readable rows of a damaged file's `tables` into `dst`, row by row.

    Returns (rows saved per table, rows lost). A file whose header is gone yields nothing.
    """
    saved, lost = [0] * len(tables), 0
    try:
        src = sqlite3.connect(str(src_path))
    except sqlite3.Error:
        return saved, 0
    try:
        for i, (table, cols, where, json_col) in enumerate(tables):
            try:
                rowids = [r for (r,) in src.execute(f"SELECT rowid FROM {table} {where} ORDER BY rowid")]
            except sqlite3.DatabaseError:
                try:  # the index may be what is damaged: scan the table itself
                    rowids = [r for (r,) in src.execute(f"SELECT rowid FROM {table} NOT INDEXED {where}")]
                except sqlite3.DatabaseError:
                    continue
            for rowid in rowids:
                try:
                    row = src.execute(f"SELECT {', '.join(cols)} FROM {table} WHERE rowid = ? {where.replace('WHERE', 'AND')}",
                                      (rowid,)).fetchone()
                    if row is None:
                        continue
                    value = row[cols.index(json_col)]
                    if not (isinstance(value, bytes) and is_sealed(value)):  # a sealed one is checked when opened
                        json.loads(value)
                    dst.execute(f"INSERT OR IGNORE INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})", row)
                    saved[i] += 1
                except (sqlite3.DatabaseError, ValueError, TypeError):
                    lost += 1
    finally:
        src.close()
    return saved, lost
