"""The outbox survives its file being deleted or damaged, and closes the incidents a killed recognizer left open.

Real parts: a real SQLite file damaged on disk, the real dashboard on 127.0.0.1, a real process SIGKILLed.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from recognizer.alerting.outbox import Outbox
from shared.alert_wire import AlertEvent
from recognizer.alerting.sinks import DashboardSink, DashboardTarget
from tests.alerts.conftest import Dashboard, LogLines
from tests.alerts.test_outbox import fast
from tests.conftest import REPO

pytestmark = pytest.mark.timeout(120)


def opened(jpeg: bytes, n: int, station: str = "desk-1") -> list[AlertEvent]:
    t0 = time.time() - 60
    return [AlertEvent(uuid.uuid4().hex, uuid.uuid4().hex, station, "alice", "unknown_face", "open", t0 + i, None,
                       {"faces": 1}, image=jpeg) for i in range(n)]


def wait_line(lines: LogLines, text: str, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    while True:
        found = [ln for ln in lines.lines if text in ln]
        if found:
            return found[0]
        if time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    raise AssertionError(f"no log line with {text!r}; got {lines.lines[-5:]}")


LATE = uuid.uuid4().hex


def test_file_deleted_while_running_is_recreated_and_nothing_is_lost(tmp_path, dashboard: Dashboard, stranger_jpeg):
    path = tmp_path / "var" / "outbox.sqlite3"
    events = opened(stranger_jpeg, 9)
    with LogLines("recognizer.alerting") as lines:
        box = Outbox(fast(path), [DashboardSink(DashboardTarget(dashboard.url, dashboard.token))])  # dashboard down
        box.start()
        for ev in events:
            box.put(ev)
        for suffix in ("", "-wal", "-shm", "-journal"):  # what `rm var/outbox.sqlite3*` does
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        line = wait_line(lines, "OUTBOX FILE DELETED", 10)  # the sender notices within its 5 s wake-up
        assert line.startswith("ERROR") and "9 pending event(s)" in line and "9 open incident(s)" in line
        assert path.exists()
        box.put(AlertEvent(LATE, events[0].alert_id, "desk-1", "alice", "unknown_face", "closed", events[0].started_at,
                           time.time(), {}))
        box.stop(flush_timeout_s=0.1)
    again = Outbox(fast(path), [DashboardSink(DashboardTarget(dashboard.url, dashboard.token))])
    assert again.pending() >= 10  # the 9 + the close, and the 8 incidents still open are closed by the restart
    dashboard.start()
    again.start()
    try:
        assert again.flush(30), f"{again.pending()} still pending"
    finally:
        again.stop()
    got = {e for (e,) in dashboard.query("SELECT event_id FROM alert_events")}
    assert {e.event_id for e in events} | {LATE} <= got


def test_damaged_file_at_start_is_moved_aside_and_its_readable_rows_kept(tmp_path, dashboard: Dashboard, stranger_jpeg):
    path = tmp_path / "outbox.sqlite3"
    target = DashboardTarget(dashboard.url, dashboard.token)
    events = opened(stranger_jpeg, 40)
    box = Outbox(fast(path), [DashboardSink(target)])
    for ev in events:
        box.put(ev)
    box.stop(flush_timeout_s=0)
    with open(path, "r+b") as f:  # three pages in the middle of the file overwritten
        f.seek(100 * 4096)
        f.write(os.urandom(3 * 4096))
    with LogLines("recognizer.alerting") as lines:
        box = Outbox(fast(path), [DashboardSink(target)])  # used to raise: the recognizer exited 1
    line = wait_line(lines, "OUTBOX DAMAGED", 0)
    assert line.startswith("ERROR") and "could not be read and are lost" in line
    aside = list(tmp_path.glob("outbox.sqlite3.corrupt-*"))
    assert len(aside) == 1 and aside[0].stat().st_size > 100 * 4096
    saved = box.pending() - 40  # every salvaged open incident is also closed by the restart
    assert 30 <= saved < 40, saved
    dashboard.start()
    box.start()
    try:
        assert box.flush(30)
    finally:
        box.stop()
    assert len(dashboard.query("SELECT alert_id FROM alerts WHERE ended_at IS NOT NULL")) >= 30


def test_file_that_is_not_a_database_starts_a_fresh_outbox(tmp_path, dashboard: Dashboard, stranger_jpeg):
    path = tmp_path / "outbox.sqlite3"
    path.write_bytes(b"this is not an SQLite file\n" * 200)
    with LogLines("recognizer.alerting") as lines:
        box = Outbox(fast(path), [DashboardSink(DashboardTarget(dashboard.url, dashboard.token))])
    assert "file is not a database" in wait_line(lines, "OUTBOX DAMAGED", 0)
    assert box.pending() == 0 and len(list(tmp_path.glob("outbox.sqlite3.corrupt-*"))) == 1
    dashboard.start()
    box.start()
    try:
        box.put(opened(stranger_jpeg, 1)[0])
        assert box.flush(30)
    finally:
        box.stop()
    assert len(dashboard.query("SELECT event_id FROM alert_events")) == 1


KILLED = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from recognizer.alerting.rules import AlertEngine
    from recognizer.alerting.outbox import Outbox, OutboxConfig
    from recognizer.alerting.sinks import DashboardSink, DashboardTarget
    from shared.results import FaceResult
    path, url, token, jpeg = Path(sys.argv[1]), sys.argv[2], sys.argv[3], Path(sys.argv[4]).read_bytes()
    box = Outbox(OutboxConfig(path=path), [DashboardSink(DashboardTarget(url, token))])
    box.start()
    for station in ("desk-01", "desk-02"):
        engine = AlertEngine(station)
        for i in range(60):  # a stranger for 6 s: the incident opens and stays open
            face = FaceResult((0, 80, 80, 0), 1, "unknown", liveness="live")
            for ev in engine.observe(time.time() - 6 + i / 10, [face], "alice", None, evidence=jpeg):
                box.put(ev)
    assert box.flush(30)
    print("ready", flush=True)
    time.sleep(120)
""")


def test_incidents_open_when_the_recognizer_was_killed_are_closed_at_the_next_start(tmp_path, dashboard: Dashboard):
    path = tmp_path / "outbox.sqlite3"
    dashboard.start()
    proc = subprocess.Popen([sys.executable, "-c", KILLED, str(path), dashboard.url, dashboard.token,
                             str(REPO / "tests" / "fixtures" / "stranger_kit.jpg")],
                            cwd=REPO, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(HEARTBEAT_WAIT_S)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert [e for (e,) in dashboard.query("SELECT ended_at FROM alerts")] == [None, None]  # open forever, before

    box = Outbox(fast(path), [DashboardSink(DashboardTarget(dashboard.url, dashboard.token))])
    box.start()
    try:
        assert box.flush(30)
    finally:
        box.stop()
    rows = dashboard.query("SELECT started_at, ended_at, details FROM alerts")
    assert len(rows) == 2
    for started, ended, details in rows:
        assert ended is not None and json.loads(details)["closed_by"] == "recognizer_restart"
    # a second start has nothing left to close
    assert Outbox(fast(path), []).pending() == 0


HEARTBEAT_WAIT_S = 0.5
