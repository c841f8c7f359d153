"""Worker processes end with the recognizer, even when it is SIGKILLed (no orphans holding ~150 MB each)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from tests import proctree as procs
from tests.conftest import REPO
from tests.test_end_to_end import free_port

pytestmark = [pytest.mark.timeout(180), pytest.mark.skipif(not procs.PROC.is_dir(), reason="needs /proc (Linux)")]


def test_sigkilled_recognizer_leaves_no_processes(tmp_path, sample_index_dir):
    log = tmp_path / "recognizer.log"
    cmd = [sys.executable, "-m", "recognizer", "--host", "127.0.0.1", "--port", str(free_port()), "--token", "t",
           "--index", str(sample_index_dir), "--known-faces", str(tmp_path / "known"), "--workers", "2"]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 90
        while "listening on" not in log.read_text():
            assert proc.poll() is None, log.read_text()
            assert time.time() < deadline, "recognizer did not start"
            time.sleep(0.2)
        children = procs.descendants(proc.pid)
        workers = [p for p in children if "multiprocessing" in procs.cmdline(p)]
        assert len(workers) >= 2, [procs.cmdline(p) for p in children]  # two encoders (and the resource tracker)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        left = procs.wait_gone(lambda: [p for p in children if procs.alive(p)], 15)
        assert not left, [procs.cmdline(p) for p in left]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_watchdog_ends_a_child_whose_parent_died_without_pdeathsig(tmp_path):
    """The portable fallback alone (no prctl): the getppid() watchdog notices the parent is gone."""
    child = textwrap.dedent("""
        import os, sys, time
        from recognizer.vision.encoders import exit_with_parent
        exit_with_parent(os.getppid(), use_pdeathsig=False, poll_s=0.2)
        print(os.getpid(), flush=True)
        time.sleep(60)
    """)
    parent = f"import subprocess, sys; p = subprocess.Popen([sys.executable, '-c', {child!r}]); p.wait()"
    proc = subprocess.Popen([sys.executable, "-c", parent], cwd=REPO, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        child_pid = int(proc.stdout.readline())
        assert procs.alive(child_pid)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert not procs.wait_gone(lambda: [child_pid] if procs.alive(child_pid) else [], 5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
