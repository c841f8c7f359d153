"""A full disk under the outbox: nothing lost while the memory bound holds, the exact loss beyond it, said once, and
recovery by itself as soon as a little space returns. Real tmpfs (root only; skips otherwise), real SQLite."""
from __future__ import annotations

import os
import shutil
import time
import uuid
from pathlib import Path

import pytest

from bench.disk_full import fill, mount_tmpfs, scenario, umount
from recognizer.alerting.outbox import Outbox, OutboxConfig
from recognizer.alerting.rules import AlertEvent
from recognizer.alerting.sinks import DashboardSink, DashboardTarget
from tests.alerts.conftest import Dashboard, LogLines

pytestmark = [pytest.mark.timeout(300)]


@pytest.fixture
def small_disk(tmp_path: Path):  # noqa: ANN201 - a 2 MiB filesystem, unmounted after
    mount = tmp_path / "small"
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a 2 MiB tmpfs (a full disk cannot be made without one)")
    if not mount_tmpfs(mount):
        pytest.skip("mount -t tmpfs failed here (no CAP_SYS_ADMIN in this container)")
    yield mount
    umount(mount)


def opened(jpeg: bytes, n: int) -> list[AlertEvent]:
    return [AlertEvent(uuid.uuid4().hex, uuid.uuid4().hex, f"desk-{i}", "alice", "unknown_face", "open", time.time(), None,
                       {"n": i}, image=jpeg) for i in range(n)]


@pytest.mark.slow
def test_real_recognizer_on_a_full_disk_loses_nothing_and_recovers(tmp_path, small_disk, sample_index_dir):
    from tests.procs import REPO

    from shared.crypto import KeyRing, new_key, write_ring

    work = tmp_path / "work"
    work.mkdir()
    # sealed at rest, as the demo and the deployment docs run it: the outbox's rows are sealed on the full disk too
    key = tmp_path / "data.key"
    write_ring(key, KeyRing((new_key(),)))
    index = shutil.copytree(sample_index_dir, work / "index")
    out = scenario(REPO, work, small_disk, index, cycles=3, free_kb=128, data_key=key)
    print(out)
    assert out.raised >= 6, "the stations raised too few incidents to say anything"
    assert out.lost == 0, out  # every event raised reached the dashboard, through the full disk and its outage
    assert out.error_lines == 1 and out.tracebacks == 0, (work / "recognizer.log").read_text()[-3000:]
    # 128 KiB freed is enough to go on: the file takes writes again within the run (once what memory held is out;
    # no fixed seconds, the time depends on how fast a loaded machine delivers)
    assert out.writable_s is not None, out
    assert {"disk_full", "ok"} <= out.status_seen  # the dashboard was told, then told it is over
    assert "disk_full" in out.heartbeat_states  # and so were the edges
    from shared.crypto import is_sealed

    assert is_sealed((index / "index.npz").read_bytes())  # it really ran sealed


def test_memory_bound_loses_exactly_the_excess_and_says_so(tmp_path, small_disk, dashboard: Dashboard, stranger_jpeg):
    path = small_disk / "outbox.sqlite3"
    target = DashboardTarget(dashboard.url, dashboard.token)  # the dashboard is down
    with LogLines("recognizer.alerting") as lines:
        box = Outbox(OutboxConfig(path=path, backoff_initial_s=0.05, backoff_max_s=0.2, memory_events=5),
                     [DashboardSink(target)])
        box.start()
        fill(small_disk / "filler")
        events = opened(stranger_jpeg, 12)
        for ev in events:
            box.put(ev)  # never raises
        health = box.health()
        assert health.state == "disk_full" and health.held == 5 and health.lost >= 7
        (small_disk / "filler").unlink()
        dashboard.start()
        assert box.flush(30), box.pending()
        box.stop()
    errors = [x for x in lines.lines if x.startswith("ERROR")]
    assert len([x for x in errors if "OUTBOX CANNOT WRITE" in x]) == 1
    assert len([x for x in errors if "memory bound" in x]) == 1
    recovered = [x for x in lines.lines if "takes writes again" in x]
    assert len(recovered) == 1 and "7 lost over the memory bound" in recovered[0], recovered
    got = {e for (e,) in dashboard.query("SELECT event_id FROM alert_events")}
    # the first event may have made it to the file before the disk filled; the oldest held ones were dropped
    assert {e.event_id for e in events[-5:]} <= got and len(got) == len(events) - 7
