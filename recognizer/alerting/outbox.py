"""Persistent alert outbox: events are written to SQLite in the station thread, a sender thread delivers them.

Delivery is at-least-once per sink with a stable `event_id`, and the dashboard stores each event id
once, so the dashboard sees every event exactly once: through a dashboard that is down for an hour,
a recognizer restart (pending rows are read back at start) or a lost reply. Per sink, events go
oldest first; a transient failure (connection error, timeout, 408, 429, 5xx) backs that sink off
(1 s doubling to 60 s, ±20 % jitter) and stops its pass, so order is kept and a dead dashboard is
not hammered. A permanent failure (any other 4xx) parks the row for that sink with the reason logged.

The file is bounded: over `max_bytes` the images of the oldest pending events are dropped first
(an opening image becomes a grey placeholder, so the dashboard still accepts it), over `max_events`
the oldest pending events are deleted; both are logged at WARNING/ERROR, never silent.

Incidents still open are kept in the file too (`open_incidents`), with a heartbeat of the sender thread.
A recognizer that dies without closing them (SIGKILL, power loss) closes them at its next start with
`closed_by: recognizer_restart`, ended at the last moment it was known alive, so none stays open forever.

Damage to the file does not stop the recognizer and loses as little as it can, always with an ERROR line:
a file deleted (or replaced) while running is noticed within seconds (and at every put and stop), and a
fresh file is written from what the open connection still reads, so nothing is lost; a damaged file (at
start or while running) is moved aside as `<name>.corrupt-<time>`, its readable rows are copied into a
fresh outbox, and the count of what could not be read is logged.
"""
from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Protocol, Sequence

from recognizer.alerting.rules import AlertEvent
from shared.alert_wire import encode_event
from shared.backoff import Backoff

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    event_id     TEXT PRIMARY KEY,
    alert_id     TEXT NOT NULL,
    payload      TEXT NOT NULL,            -- the dashboard's meta JSON
    image        BLOB,                     -- evidence at opening (open events)
    best_image   BLOB,                     -- best frame (update/closed events)
    sinks_left   TEXT NOT NULL,            -- JSON list of sink names still to deliver to
    parked       TEXT NOT NULL DEFAULT '{}', -- JSON {sink: reason} of permanent failures
    attempts     INTEGER NOT NULL DEFAULT 0,
    next_try_at  REAL NOT NULL,
    created_at   REAL NOT NULL,
    delivered_at REAL,
    last_error   TEXT
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (delivered_at, created_at);
CREATE TABLE IF NOT EXISTS open_incidents (  -- incidents opened and not yet closed (closed at the next start)
    alert_id    TEXT PRIMARY KEY,
    station_id  TEXT NOT NULL,
    login_name  TEXT NOT NULL,
    type        TEXT NOT NULL,
    started_at  REAL NOT NULL,
    details     TEXT NOT NULL,            -- JSON of the last event's details
    updated_at  REAL NOT NULL             -- time of its last event
);
CREATE TABLE IF NOT EXISTS heartbeat (id INTEGER PRIMARY KEY CHECK (id = 1), alive_at REAL NOT NULL);
"""
COLUMNS = ("event_id", "alert_id", "payload", "image", "best_image", "sinks_left", "parked", "attempts", "next_try_at",
           "created_at", "delivered_at", "last_error")
INCIDENT_COLUMNS = ("alert_id", "station_id", "login_name", "type", "started_at", "details", "updated_at")
HEARTBEAT_S = 5.0  # the sender notes it is alive this often (the end time of incidents a crash left open)


class TransientDeliveryError(Exception):
    """The sink could not take the event now (down, timeout, 408/429/5xx); retry later."""


class PermanentDeliveryError(Exception):
    """The sink refused the event for good (4xx); retrying would not help. The message says why."""


class OutboxError(RuntimeError):
    """The outbox file could not be written (disk full, file locked or damaged); the message says which."""


class Sink(Protocol):
    name: str

    def deliver(self, meta: dict, image: Optional[bytes], best_image: Optional[bytes]) -> None:
        """Deliver one event or raise TransientDeliveryError / PermanentDeliveryError."""


@dataclass(frozen=True)
class OutboxConfig:
    """Outbox limits. Sizes in bytes, times in seconds."""

    path: Path = Path("var/outbox.sqlite3")
    max_events: int = 10_000
    max_bytes: int = 200 * 1024 * 1024
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 60.0
    jitter: float = 0.2
    batch: int = 50
    keep_delivered_s: float = 86400.0  # delivered rows (without images) kept this long for inspection

    def __post_init__(self) -> None:
        if self.max_events < 10:
            raise ValueError(f"outbox max_events must be at least 10, got {self.max_events}")
        if self.max_bytes < 1024 * 1024:
            raise ValueError(f"outbox max_bytes must be at least 1 MiB, got {self.max_bytes}")
        if not 0 < self.backoff_initial_s <= self.backoff_max_s:
            raise ValueError("outbox back-off must satisfy 0 < initial <= max")
        if not 0 <= self.jitter < 1:
            raise ValueError(f"outbox jitter must be 0..1, got {self.jitter}")


def event_meta(ev: AlertEvent) -> dict:
    """The dashboard's `meta` JSON for an event (the one wire shape, `shared.alert_wire`)."""
    return encode_event(ev)


def placeholder_jpeg() -> bytes:
    """A small grey JPEG standing in for evidence dropped to keep the outbox within its size."""
    import cv2
    import numpy as np

    img = np.full((120, 160, 3), 128, np.uint8)
    cv2.putText(img, "evidence dropped", (6, 64), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1)
    return cv2.imencode(".jpg", img)[1].tobytes()


class Outbox:
    """The SQLite outbox and its sender thread. `put()` from any thread; `start()`/`stop()` the sender."""

    def __init__(self, config: OutboxConfig, sinks: Sequence[Sink], clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.sinks = {s.name: s for s in sinks}
        self._clock = clock
        config.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._sink_backoff = {name: Backoff(config.backoff_initial_s, config.backoff_max_s, config.jitter)
                              for name in self.sinks}
        self._sink_next = {name: 0.0 for name in self.sinks}
        self._placeholder: Optional[bytes] = None
        self._alive_written = 0.0
        try:
            self._db = self._connect()
        except sqlite3.DatabaseError as exc:  # not a database, malformed: the recognizer runs on regardless
            self._db = self._replace_damaged(None, exc)
        self._file_id = self._stat_id()
        self._recount()
        if self._count:
            log.info("outbox %s: %d pending event(s) (%.1f MiB) from before, to deliver",
                     config.path, self._count, self._bytes / 2**20)
        self._close_interrupted()

    # -- the file --
    def _connect(self) -> sqlite3.Connection:
        """Open (or create) the file and check it; sqlite3.DatabaseError when it is damaged."""
        db = sqlite3.connect(str(self.config.path), check_same_thread=False, isolation_level=None, timeout=30)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across a process crash, fast commits
            db.executescript(SCHEMA)
            verdict = db.execute("PRAGMA quick_check").fetchone()[0]
            if verdict != "ok":
                first = verdict.replace("*** in database main ***", "").strip().splitlines()[0][:200]
                raise sqlite3.DatabaseError(f"integrity check failed: {first}")
        except sqlite3.DatabaseError:
            db.close()
            raise
        return db

    def _recount(self) -> None:
        count, size = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(image)) + 0, 0) + COALESCE(SUM(LENGTH(best_image)), 0) "
            "FROM outbox WHERE delivered_at IS NULL").fetchone()
        self._count, self._bytes = int(count), int(size)

    def _stat_id(self) -> Optional[tuple[int, int]]:
        try:
            st = os.stat(self.config.path)
        except FileNotFoundError:
            return None
        return st.st_dev, st.st_ino

    def _move_aside(self, tag: str) -> Path:
        """Rename the file (and its -wal/-shm) to `<name>.<tag>-<YYYYmmdd-HHMMSS>`; returns the new path."""
        path = self.config.path
        stamp = time.strftime("%Y%m%d-%H%M%S")
        dst = path.with_name(f"{path.name}.{tag}-{stamp}")
        n = 1
        while dst.exists():
            n += 1
            dst = path.with_name(f"{path.name}.{tag}-{stamp}-{n}")
        for suffix in ("", "-wal", "-shm"):
            src = Path(f"{path}{suffix}")
            if src.exists():
                os.replace(src, f"{dst}{suffix}")
        return dst

    def _replace_damaged(self, old: Optional[sqlite3.Connection], exc: Exception) -> sqlite3.Connection:
        """The file is damaged: move it aside, start a fresh one, copy in the rows that can still be read."""
        if old is not None:
            try:
                old.close()
            except sqlite3.Error:
                pass
        aside = self._move_aside("corrupt")
        db = self._connect()
        saved, lost = _salvage(aside, db)
        log.error("OUTBOX DAMAGED: %s could not be used (%s); moved it to %s and started a fresh outbox. Salvaged %d "
                  "pending event(s) and %d open incident(s); %d row(s) could not be read and are lost",
                  self.config.path, exc, aside.name, saved[0], saved[1], lost)
        return db

    def _check_file(self) -> None:
        """The file deleted or replaced under the open connection: recreate it from what the connection reads.

        Caller holds the lock. SQLite keeps writing to a deleted file without a word, and all of it would be
        gone at the next start; the open connection still reads it, so a backup into a new file loses nothing.
        """
        now_id = self._stat_id()
        if now_id == self._file_id:
            return
        path = self.config.path
        replaced = None
        if now_id is not None:  # someone else's file at our path: keep it for inspection
            replaced = self._move_aside("replaced")
        path.parent.mkdir(parents=True, exist_ok=True)  # the whole folder may have gone
        tmp = path.with_name(path.name + ".recovering")
        tmp.unlink(missing_ok=True)
        copy = sqlite3.connect(str(tmp))
        try:
            self._db.backup(copy)
        finally:
            copy.close()
        self._db.close()
        for suffix in ("-wal", "-shm"):  # the deleted file's, left behind: they would be replayed into the new one
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        os.replace(tmp, path)
        self._db = self._connect()
        self._file_id = self._stat_id()
        self._recount()
        held = self._db.execute("SELECT COUNT(*) FROM open_incidents").fetchone()[0]
        log.error("OUTBOX FILE %s while running: %s; recreated it with the %d pending event(s) and %d open "
                  "incident(s) still held, nothing lost", "REPLACED" if replaced else "DELETED", path, self._count, held)
        if replaced is not None:
            log.error("the file found in its place was moved to %s", replaced)

    def _guard(self) -> None:
        """Caller holds the lock: notice a deleted or replaced file; a failure to recreate it is logged, not raised."""
        try:
            self._check_file()
        except (OSError, sqlite3.Error):
            log.exception("outbox: cannot recreate %s", self.config.path)

    # -- incidents a crash left open --
    def _track_incident(self, ev: AlertEvent, now: float) -> None:
        if ev.state == "closed":
            self._db.execute("DELETE FROM open_incidents WHERE alert_id = ?", (ev.alert_id,))
        else:
            self._db.execute(
                "INSERT OR REPLACE INTO open_incidents (alert_id, station_id, login_name, type, started_at, details, "
                "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (ev.alert_id, ev.station_id, ev.login_name, ev.type, ev.started_at, json.dumps(ev.details), now))

    def _close_interrupted(self) -> None:
        """Close the incidents that were open when the last recognizer died without closing them."""
        rows = self._db.execute(f"SELECT {', '.join(INCIDENT_COLUMNS)} FROM open_incidents ORDER BY started_at").fetchall()
        if not rows:
            return
        beat = self._db.execute("SELECT alive_at FROM heartbeat WHERE id = 1").fetchone()
        log.warning("outbox: %d incident(s) were left open by a recognizer that stopped without closing them "
                    "(killed or crashed); closing them now (closed_by recognizer_restart)", len(rows))
        for alert_id, station, login, kind, started, details, updated in rows:
            ended = max(updated, beat[0]) if beat is not None else updated  # the last moment it was known alive
            try:
                old = json.loads(details)
            except ValueError:
                old = {}
            ev = AlertEvent(uuid.uuid4().hex, alert_id, station, login, kind, "closed", started, ended,
                            {**(old if isinstance(old, dict) else {}), "closed_by": "recognizer_restart",
                             "duration_s": round(max(0.0, ended - started), 1)})
            log.info("alert %s closed station=%s login=%r alert_id=%s (recognizer restart)", kind, station, login, alert_id)
            if self.sinks:
                self.put(ev)
            else:
                self._db.execute("DELETE FROM open_incidents WHERE alert_id = ?", (alert_id,))

    def _beat(self) -> None:
        now = self._clock()
        if now - self._alive_written >= HEARTBEAT_S:
            with self._lock:
                self._db.execute("INSERT OR REPLACE INTO heartbeat (id, alive_at) VALUES (1, ?)", (now,))
            self._alive_written = now

    # -- writing (station threads) --
    def put(self, ev: AlertEvent) -> None:
        """Store one event for every configured sink (a single INSERT; safe from any thread)."""
        image = ev.image if isinstance(ev.image, (bytes, bytearray)) else None
        best = ev.best_image if isinstance(ev.best_image, (bytes, bytearray)) else None
        now = self._clock()
        payload = json.dumps(event_meta(ev), separators=(",", ":"))
        if not self.sinks:
            return
        with self._lock:
            self._guard()
            try:
                try:
                    self._insert(ev, payload, image, best, now)
                except sqlite3.DatabaseError as exc:
                    if type(exc) is not sqlite3.DatabaseError:  # locked, disk full, constraint: not damage
                        raise
                    self._db = self._replace_damaged(self._db, exc)
                    self._file_id = self._stat_id()
                    self._recount()
                    self._insert(ev, payload, image, best, now)
            except sqlite3.Error as exc:
                raise OutboxError(f"cannot store alert event in {self.config.path}: {exc}") from exc
        self._wake.set()

    def _insert(self, ev: AlertEvent, payload: str, image: Optional[bytes], best: Optional[bytes], now: float) -> None:
        cur = self._db.execute(
            "INSERT OR IGNORE INTO outbox (event_id, alert_id, payload, image, best_image, sinks_left, next_try_at, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (ev.event_id, ev.alert_id, payload, image, best, json.dumps(sorted(self.sinks)), now, now))
        self._track_incident(ev, now)
        if cur.rowcount != 1:
            return  # the same event id again: already stored
        self._count += 1
        self._bytes += len(image or b"") + len(best or b"")
        if self._count > self.config.max_events or self._bytes > self.config.max_bytes:
            self._shrink()

    def _shrink(self) -> None:
        """Bring the pending events back under the limits, oldest first; every drop is logged."""
        cfg = self.config
        if self._bytes > cfg.max_bytes:
            target = int(cfg.max_bytes * 0.9)
            rows = self._db.execute(
                "SELECT event_id, payload, LENGTH(image), LENGTH(best_image) FROM outbox WHERE delivered_at IS NULL "
                "AND (image IS NOT NULL OR best_image IS NOT NULL) ORDER BY created_at, rowid").fetchall()
            dropped = 0
            for event_id, payload, n_img, n_best in rows:
                if self._bytes <= target:
                    break
                meta = json.loads(payload)
                new_image = None
                if meta.get("state") == "open" and n_img:
                    if self._placeholder is None:
                        self._placeholder = placeholder_jpeg()
                    new_image = self._placeholder
                meta.setdefault("details", {})["evidence_dropped"] = True
                self._db.execute("UPDATE outbox SET image = ?, best_image = NULL, payload = ? WHERE event_id = ?",
                                 (new_image, json.dumps(meta, separators=(",", ":")), event_id))
                self._bytes -= (n_img or 0) + (n_best or 0) - len(new_image or b"")
                dropped += 1
            log.warning("outbox over %.0f MiB: dropped the evidence images of the %d oldest pending event(s)",
                        cfg.max_bytes / 2**20, dropped)
        if self._count > cfg.max_events:
            excess = self._count - cfg.max_events
            rows = self._db.execute(
                "SELECT event_id, alert_id, payload, COALESCE(LENGTH(image), 0) + COALESCE(LENGTH(best_image), 0) FROM outbox "
                "WHERE delivered_at IS NULL ORDER BY created_at, rowid LIMIT ?", (excess,)).fetchall()
            for event_id, alert_id, payload, size in rows:
                meta = json.loads(payload)
                log.error("outbox holds more than %d pending events: dropping the oldest, %s %s of alert %s (station %s)",
                          cfg.max_events, meta.get("type"), meta.get("state"), alert_id, meta.get("station_id"))
                self._db.execute("DELETE FROM outbox WHERE event_id = ?", (event_id,))
                self._count -= 1
                self._bytes -= size

    # -- reading --
    def pending(self) -> int:
        with self._lock:
            return self._count

    def parked(self) -> list[tuple[str, dict]]:
        """(event_id, {sink: reason}) of events some sink refused for good."""
        with self._lock:
            rows = self._db.execute("SELECT event_id, parked FROM outbox WHERE parked != '{}' ORDER BY created_at").fetchall()
        return [(e, json.loads(p)) for e, p in rows]

    # -- the sender --
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="outbox-sender", daemon=True)
        self._thread.start()

    def stop(self, flush_timeout_s: float = 3.0) -> None:
        """Try to deliver what is pending for up to `flush_timeout_s`, then stop the sender; the rest stays on disk."""
        if self._thread is not None and self._thread.is_alive():
            self.flush(flush_timeout_s)
            self._stop.set()
            self._wake.set()
            self._thread.join(timeout=flush_timeout_s + 35)  # a request in flight may take its timeout
        with self._lock:
            self._guard()
            left = self._count
            self._db.close()
        if left:
            log.info("outbox stopped with %d event(s) pending; they are sent on the next start", left)

    def flush(self, timeout_s: float) -> bool:
        """Wait until every pending event is delivered or parked (True) or `timeout_s` passes (False)."""
        deadline = time.monotonic() + timeout_s
        while self.pending():
            if time.monotonic() >= deadline or self._thread is None or not self._thread.is_alive():
                return False
            self._wake.set()
            time.sleep(0.02)
        return True

    def _rows(self, sink: str, limit: int) -> list[tuple]:
        """The oldest pending events still owed to `sink`."""
        with self._lock:
            return self._db.execute(
                "SELECT event_id, payload, image, best_image FROM outbox WHERE delivered_at IS NULL "
                "AND instr(sinks_left, ?) > 0 ORDER BY created_at, rowid LIMIT ?", (json.dumps(sink), limit)).fetchall()

    def _forget_unknown_sinks(self) -> None:
        """Pending rows owed to a sink that is no longer configured: drop that sink from them, with a log line."""
        with self._lock:
            rows = self._db.execute("SELECT event_id, sinks_left FROM outbox WHERE delivered_at IS NULL").fetchall()
        gone: dict[str, int] = {}
        for event_id, sinks_left in rows:
            left = json.loads(sinks_left)
            unknown = [n for n in left if n not in self.sinks]
            for n in unknown:
                gone[n] = gone.get(n, 0) + 1
            if unknown:
                self._record(event_id, [n for n in left if n in self.sinks], {n: "sink not configured" for n in unknown}, None)
        for name, n in gone.items():
            log.warning("outbox: %d pending event(s) were for sink %r, which is not configured now; parked for it", n, name)

    def _run(self) -> None:
        try:
            self._forget_unknown_sinks()
        except sqlite3.Error:
            log.exception("outbox database error while reading pending events")
        while not self._stop.is_set():
            try:
                with self._lock:
                    self._guard()
                self._beat()
                sent = self._pass()
            except sqlite3.DatabaseError as exc:
                sent = 0
                if type(exc) is sqlite3.DatabaseError:  # malformed / not a database: damage, not a busy file
                    with self._lock:
                        self._db = self._replace_damaged(self._db, exc)
                        self._file_id = self._stat_id()
                        self._recount()
                    continue
                log.exception("outbox database error; retrying in 5 s")
                self._stop.wait(5)
            if sent:
                continue
            now = self._clock()
            waits = [t - now for t in self._sink_next.values() if t > now]
            self._wake.wait(min(waits + [5.0]))
            self._wake.clear()

    def _pass(self) -> int:
        """For each sink not backing off, deliver its oldest batch until one fails. Returns deliveries made."""
        done = 0
        for name, sink in self.sinks.items():
            if self._sink_next[name] > self._clock():
                continue
            for event_id, payload, image, best in self._rows(name, self.config.batch):
                if self._stop.is_set():
                    return done
                meta = json.loads(payload)
                try:
                    sink.deliver(meta, image, best)
                except TransientDeliveryError as exc:
                    self._backoff(name, str(exc))
                    self._record(event_id, None, {}, f"{name}: {exc}")
                    break  # keep this sink's order: nothing newer goes before this one
                except PermanentDeliveryError as exc:
                    log.error("outbox: %s refused %s %s of alert %s for good (event %s), parked: %s",
                              name, meta.get("type"), meta.get("state"), meta.get("alert_id"), event_id, exc)
                    self._record(event_id, name, {name: str(exc)}, f"{name}: {exc}")
                    continue
                if self._sink_backoff[name].failures:
                    log.info("outbox: sink %s is reachable again", name)
                self._sink_backoff[name].reset()
                self._record(event_id, name, {}, None)
                done += 1
        return done

    def _backoff(self, name: str, reason: str) -> None:
        backoff = self._sink_backoff[name]
        delay = backoff.next_delay()
        n = backoff.failures
        self._sink_next[name] = self._clock() + delay
        level = logging.WARNING if n in (1, 10) or n % 60 == 0 else logging.DEBUG
        log.log(level, "outbox: sink %s failed (%s); attempt %d, next try in %.1f s", name, reason, n, delay)

    def _record(self, event_id: str, done_sink: Optional[str] | list, parked: dict[str, str], error: Optional[str]) -> None:
        """After one try: `done_sink` (a name, or the new list of sinks left) is no longer owed; None = failed, retry."""
        now = self._clock()
        with self._lock:
            row = self._db.execute("SELECT sinks_left, COALESCE(LENGTH(image), 0) + COALESCE(LENGTH(best_image), 0) "
                                   "FROM outbox WHERE event_id = ? AND delivered_at IS NULL", (event_id,)).fetchone()
            if row is None:
                return
            left = json.loads(row[0])
            if done_sink is None:
                next_try = min([self._sink_next[n] for n in left if n in self._sink_next] or [now])
                self._db.execute("UPDATE outbox SET attempts = attempts + 1, last_error = ?, next_try_at = ? WHERE event_id = ?",
                                 (error, next_try, event_id))
                return
            left = done_sink if isinstance(done_sink, list) else [n for n in left if n != done_sink]
            if left:
                self._db.execute("UPDATE outbox SET sinks_left = ?, parked = json_patch(parked, ?), last_error = ? "
                                 "WHERE event_id = ?", (json.dumps(left), json.dumps(parked), error, event_id))
                return
            # delivered everywhere (or parked): the images go, the row stays a while for inspection
            self._db.execute("UPDATE outbox SET sinks_left = '[]', delivered_at = ?, image = NULL, best_image = NULL, "
                             "parked = json_patch(parked, ?), last_error = COALESCE(?, last_error) WHERE event_id = ?",
                             (now, json.dumps(parked), error, event_id))
            self._count -= 1
            self._bytes -= row[1]
            self._db.execute("DELETE FROM outbox WHERE delivered_at < ? AND parked = '{}'", (now - self.config.keep_delivered_s,))


def _salvage(src_path: Path, dst: sqlite3.Connection) -> tuple[tuple[int, int], int]:
    """Copy the readable pending events and open incidents of a damaged file into `dst`, row by row.

    Returns ((events saved, incidents saved), rows lost). A file whose header is gone yields nothing.
    """
    saved, lost = [0, 0], 0
    try:
        src = sqlite3.connect(str(src_path))
    except sqlite3.Error:
        return (0, 0), 0
    try:
        for i, (table, cols, where) in enumerate((("outbox", COLUMNS, "WHERE delivered_at IS NULL"),
                                                  ("open_incidents", INCIDENT_COLUMNS, ""))):
            try:
                rowids = [r for (r,) in src.execute(f"SELECT rowid FROM {table} {where} ORDER BY rowid")]
            except sqlite3.DatabaseError:
                try:  # the index may be what is damaged: scan the table itself
                    rowids = [r for (r,) in src.execute(f"SELECT rowid FROM {table} NOT INDEXED")]
                except sqlite3.DatabaseError:
                    continue
            for rowid in rowids:
                try:
                    row = src.execute(f"SELECT {', '.join(cols)} FROM {table} WHERE rowid = ?", (rowid,)).fetchone()
                    if row is None or (table == "outbox" and row[cols.index("delivered_at")] is not None):
                        continue
                    json.loads(row[2] if table == "outbox" else row[cols.index("details")])
                    dst.execute(f"INSERT OR IGNORE INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})", row)
                    saved[i] += 1
                except (sqlite3.DatabaseError, ValueError, TypeError):
                    lost += 1
    finally:
        src.close()
    return (saved[0], saved[1]), lost
