"""A full disk under the alert outbox: events lost, and time to recover once space returns.

    .venv/bin/python -m bench.disk_full [--runs 3] [--cycles 6] [--free-kb 128] [--repo PATH]  (as root: tmpfs)

Real processes on loopback: the dashboard (`python -m dashboard serve`, SQLite) and the recognizer
(`python -m recognizer`, HOG, one worker) whose `--outbox` lies on a 2 MiB tmpfs. Each cycle a station connects,
streams a real stranger photo until its unknown_face incident opens (0.5 s) and leaves (the incident closes):
two or three events, each with a JPEG. The tmpfs is filled to the last byte, then: `cycles` cycles with the
dashboard up, the dashboard stopped, `cycles` more, the dashboard started again; then `--free-kb` is freed and a
last cycle runs. Counts: events raised = the recognizer's `alert <type> <state>` log lines; events received =
rows of the dashboard's alert_events; lost = raised - received after the end. Recovery = seconds from the
freeing until an incident opened after it is stored at the dashboard. `--repo` runs another checkout's programs
(the code before a change) in the same way.
"""
from __future__ import annotations

import argparse
import os
import re
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from tests.procs import REPO, ManagedProcess, free_port

TOKEN = "bench-recognizer-service-token-0001"
FILL_CHUNK = 16 * 1024


@dataclass
class Outcome:
    raised: int
    received: int
    lost: int
    recovery_s: Optional[float]  # None: no event raised after the freeing arrived
    writable_s: Optional[float]  # seconds from the freeing to the outbox's "takes writes again" line (None: none)
    error_lines: int  # "OUTBOX CANNOT WRITE" lines
    tracebacks: int
    status_seen: set  # alerts states the dashboard stored for the stations during the run
    heartbeat_states: set  # alerts states the station clients were told


def mount_tmpfs(path: Path, size: str = "2m") -> bool:
    """Mount a small tmpfs at `path` (root only); False when it cannot."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


def umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(path: Path) -> int:
    """Write `path` until the filesystem is full; returns the bytes written."""
    n = 0
    with open(path, "ab", buffering=0) as f:
        while True:
            try:
                n += f.write(b"\0" * FILL_CHUNK)
            except OSError:
                break
        for size in (4096, 512, 1):
            while True:
                try:
                    n += f.write(b"\0" * size)
                except OSError:
                    break
    return n


def station_cycle(address: tuple, station: str, jpeg: bytes, seconds: float, told: set) -> None:
    """HELLO, the photo as frames for `seconds` (one in flight), then leave; notes `alerts` states heard."""
    from shared import protocol
    from shared.protocol import MessageKind
    from shared.stream import MessageStream

    stream = MessageStream(socket.create_connection(address, timeout=20))
    try:
        stream.send(protocol.hello(station, "alice", "secret"))
        reply = stream.recv()
        assert reply is not None and reply.kind == MessageKind.WELCOME, reply
        seq, deadline = 0, time.time() + seconds
        while time.time() < deadline:
            seq += 1
            stream.send(protocol.frame(seq, time.time(), jpeg))
            while True:
                reply = stream.recv()
                assert reply is not None
                if reply.kind == MessageKind.HEARTBEAT:  # the recognizer says what its outbox can do
                    told.add(reply.header.get("alerts"))
                    continue
                assert reply.kind == MessageKind.RESULT, reply.kind
                break
    finally:
        stream.close()


def _get(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:  # noqa: S310 - loopback
            return r.status == 200
    except OSError:
        return False


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def _query(db: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(db, timeout=10) as con:
        return con.execute(sql).fetchall()


RECEIVED = ("SELECT e.event_id FROM alert_events e JOIN alerts a ON a.alert_id = e.alert_id "
            "WHERE a.type NOT IN ('station_offline', 'failed_sign_in')")  # the dashboard's own alerts are not counted


def _raised(log: Path) -> int:
    return len(re.findall(r" alert \w+ (?:open|update|closed) station=", log.read_text(errors="replace")))


def _statuses(db: Path) -> set:
    """The outbox states the dashboard holds for the stations: its `degraded` codes, "ok" where there are none."""
    try:
        rows = _query(db, "SELECT degraded FROM station_status")
    except sqlite3.OperationalError:  # a dashboard without the column (older code)
        return set()
    return {code for (d,) in rows for code in ((d or "").split(",") if d else ["ok"])}


def scenario(repo: Path, work: Path, mount: Path, index_dir: Path, cycles: int = 6, free_kb: int = 128,
             memory_events: Optional[int] = None, data_key: Optional[Path] = None) -> Outcome:
    """One run (see the module doc). `mount` is an empty small filesystem; `index_dir` a built face index (sealed in
    place at start when `data_key`, a 0600 key file, is given: the recognizer then seals its outbox too)."""
    py = sys.executable
    db = work / "dashboard.sqlite3"
    url_db = f"sqlite:///{db}"
    subprocess.run([py, "-m", "dashboard", "--db", url_db, "--log-level", "WARNING", "add-station", "--station-id",
                    "recognizer", "--kind", "service", "--token", TOKEN], cwd=repo, check=True, stdout=subprocess.DEVNULL)
    dport, rport = free_port(), free_port()
    dash_url = f"http://127.0.0.1:{dport}"
    env = {"PYTHONPATH": str(repo)}

    def dashboard() -> ManagedProcess:
        d = ManagedProcess("dashboard", [py, "-m", "dashboard", "--db", url_db, "serve", "--host", "127.0.0.1",
                                         "--port", str(dport)], work / "dashboard.log", env)
        return d

    rec_cmd = [py, "-m", "recognizer", "--host", "127.0.0.1", "--port", str(rport), "--token", "secret",
               "--detector", "hog", "--no-liveness", "--workers", "1", "--index", str(index_dir),
               "--known-faces", str(work / "known_faces"), "--unknown-after", "0.5", "--cooldown", "0",
               "--dashboard-url", dash_url, "--dashboard-token", TOKEN, "--station-auth", "shared",
               "--outbox", str(mount / "outbox.sqlite3"), "--log-level", "INFO"]
    if memory_events is not None:
        rec_cmd += ["--outbox-memory-events", str(memory_events)]
    if data_key is not None:
        rec_cmd += ["--data-key-file", str(data_key)]
    rec_log = work / "recognizer.log"
    rec = ManagedProcess("recognizer", rec_cmd, rec_log, env)
    jpeg = (REPO / "tests" / "fixtures" / "stranger_kit.jpg").read_bytes()
    told: set = set()
    statuses: set = set()
    dash = dashboard()
    _start(dash, repo, lambda: _get(f"{dash_url}/healthz"))
    try:
        _start(rec, repo, lambda: _listening(rport))
        filler = mount / "filler"
        fill(filler)
        address = ("127.0.0.1", rport)
        for i in range(cycles):  # the disk full, the dashboard up
            station_cycle(address, f"desk-a{i}", jpeg, 2.5, told)
        time.sleep(1.0)
        statuses |= _statuses(db)
        dash.stop()
        for i in range(cycles):  # the disk full, the dashboard down
            station_cycle(address, f"desk-b{i}", jpeg, 2.5, told)
        dash = dashboard()
        _start(dash, repo, lambda: _get(f"{dash_url}/healthz"))
        time.sleep(2.0)
        statuses |= _statuses(db)
        with open(filler, "r+b") as f:  # space returns
            f.truncate(max(0, filler.stat().st_size - free_kb * 1024))
        t_free, t_free_wall = time.monotonic(), time.time()
        recovery = None
        n = 0
        while time.monotonic() - t_free < 30:
            n += 1
            station_cycle(address, f"desk-late{n}", jpeg, 2.5, told)
            if len(_query(db, "SELECT alert_id FROM alerts WHERE station_id LIKE 'desk-late%'")) > 0:
                recovery = time.monotonic() - t_free
                break
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(_query(db, RECEIVED)) < _raised(rec_log):
            time.sleep(0.5)
        time.sleep(6.0)  # a status report or two after the recovery
        # read after the waits: the file takes writes again only once the events held in memory are delivered or fit
        # in the room freed, which on a loaded machine can come after the first late alert reached the dashboard
        writable = _line_time(rec_log, "takes writes again after", t_free_wall)
        statuses |= _statuses(db)
    finally:
        rec.stop()
        dash.stop()
    text = rec_log.read_text(errors="replace")
    raised = _raised(rec_log)
    received = len(_query(db, RECEIVED))
    return Outcome(raised, received, raised - received, recovery, writable, text.count("OUTBOX CANNOT WRITE"),
                   text.count("Traceback"), statuses, told - {None})


def _line_time(log: Path, text: str, since: float) -> Optional[float]:
    """Seconds from `since` (wall clock) to the first log line with `text` (its own time stamp); None: none."""
    import datetime as dt

    for line in log.read_text(errors="replace").splitlines():
        if text in line:
            stamp = dt.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
            return max(0.0, stamp - since)
    return None


def _start(proc: ManagedProcess, repo: Path, ready) -> None:  # noqa: ANN001
    """ManagedProcess.start with the checkout `repo` as working directory."""
    import tests.procs as procs

    old = procs.REPO
    procs.REPO = repo
    try:
        proc.start(ready, timeout=120)
    finally:
        procs.REPO = old


def build_index(out: Path) -> Path:
    from recognizer.identity.enrol import build_index as build
    from recognizer.identity.index import save_index
    from recognizer.vision.detect import FaceEngine

    index, _ = build(FaceEngine(), REPO / "known_faces")
    save_index(index, out)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--cycles", type=int, default=6)
    p.add_argument("--free-kb", type=int, default=128)
    p.add_argument("--memory-events", type=int, default=None)
    p.add_argument("--keep", type=Path, default=None, help="keep the logs and databases in this folder")
    p.add_argument("--repo", type=Path, default=REPO, help="checkout whose programs run (default: this one)")
    args = p.parse_args()
    outcomes = []
    with tempfile.TemporaryDirectory(prefix="bench-disk-full-") as tmp:
        if args.keep is not None:
            args.keep.mkdir(parents=True, exist_ok=True)
            tmp = str(args.keep)
        index_dir = build_index(Path(tmp) / "index")
        for run in range(args.runs):
            work = Path(tmp) / f"run{run}"
            mount = work / "small"
            work.mkdir()
            if not mount_tmpfs(mount):
                print("needs root to mount a 2 MiB tmpfs", file=sys.stderr)
                return 2
            try:
                out = scenario(args.repo.resolve(), work, mount, index_dir, args.cycles, args.free_kb, args.memory_events)
            finally:
                umount(mount)
            outcomes.append(out)
            print(f"run {run + 1}: raised {out.raised}, received {out.received}, lost {out.lost}, recovery "
                  f"{'never' if out.recovery_s is None else f'{out.recovery_s:.1f} s'} (outbox writable after "
                  f"{'never' if out.writable_s is None else f'{out.writable_s:.2f} s'}), ERROR lines {out.error_lines}, "
                  f"tracebacks {out.tracebacks}, dashboard states {sorted(map(str, out.status_seen))}, "
                  f"edge told {sorted(out.heartbeat_states)}", flush=True)

    def mmm(xs: list) -> str:
        xs = [x for x in xs if x is not None]
        if not xs:
            return "never"
        return f"{min(xs):.1f} / {statistics.median(xs):.1f} / {max(xs):.1f}"
    print(f"\n{args.runs} runs, {args.cycles}+{args.cycles} cycles, {args.free_kb} KiB freed (min / median / max):")
    print(f"  events raised    {mmm([o.raised for o in outcomes])}")
    print(f"  events lost      {mmm([o.lost for o in outcomes])}")
    print(f"  new incident at the dashboard after the freeing (s)  {mmm([o.recovery_s for o in outcomes])}  "
          f"(never in {sum(o.recovery_s is None for o in outcomes)})")
    print(f"  outbox file writable again (s)  {mmm([o.writable_s for o in outcomes])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
