"""Processes seen through /proc (Linux; psutil is not a dependency): children of a pid, and the processes a
test session started, found by a marker in their environment (inherited by every child, kept after re-parenting)."""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Optional

PROC = Path("/proc")
MARKER = "FACEMON_TEST_SESSION"


def _stat(pid: int) -> Optional[tuple[str, int]]:
    """(state, ppid) of a live process, None when gone."""
    try:
        raw = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2:].split()  # the command name may contain spaces and ')'
    return fields[0], int(fields[1])


def alive(pid: int) -> bool:
    """Running or sleeping (a zombie waiting for its parent's wait() counts as gone)."""
    st = _stat(pid)
    return st is not None and st[0] not in ("Z", "X")


def cmdline(pid: int) -> str:
    try:
        return (PROC / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


def descendants(pid: int) -> list[int]:
    """Every live process below `pid` in the process tree."""
    children: dict[int, list[int]] = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            st = _stat(int(entry.name))
            if st is not None:
                children.setdefault(st[1], []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return [p for p in out if alive(p)]


def own_resource_tracker(pid: int) -> bool:
    """multiprocessing's resource tracker of *this* process: it ends when this process exits (EOF on its pipe)."""
    st = _stat(pid)
    return st is not None and st[1] == os.getpid() and "multiprocessing.resource_tracker" in cmdline(pid)


def marked(token: str) -> list[int]:
    """Live processes (other than this one and its own resource tracker) whose environment carries MARKER=token."""
    needle = f"{MARKER}={token}".encode()
    found = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            env = (entry / "environ").read_bytes()
        except OSError:  # gone, or another user's
            continue
        if needle in env.split(b"\0") and alive(int(entry.name)) and not own_resource_tracker(int(entry.name)):
            found.append(int(entry.name))
    return found


def wait_gone(find, timeout_s: float) -> list[int]:  # noqa: ANN001 - a () -> list[int]
    """Poll `find()` until it is empty or `timeout_s` passes; returns what is left."""
    deadline = time.monotonic() + timeout_s
    left = find()
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = find()
    return left
