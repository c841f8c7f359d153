"""Persistent alert outbox: the durable queue. Events are written to SQLite in the station thread, a sender thread
delivers them. (Damage to the file and its repair are `salvage.py`; events held while it cannot be written, `held.py`.)

Delivery is at-least-once per sink with a stable `event_id`, and the dashboard stores each event id
once, so the dashboard sees every event exactly once: through a dashboard that is down for an hour,
a recognizer restart (pending rows are read back at start) or a lost reply. Per sink, events go
oldest first; a transient failure (connection error, timeout, 408, 429, 5xx) backs that sink off
(1 s doubling to 60 s, ±20 % jitter) and stops its pass, so order is kept and a dead dashboard is
not hammered. A permanent failure (any other 4xx) parks the row for that sink with the reason logged.
The sinks get the stored bytes (the meta JSON as written at `put`, the JPEGs) as they are.

The file is bounded: over `max_bytes` the images of the oldest pending events are dropped first
(an opening image becomes a grey placeholder, so the dashboard still accepts it), over `max_events`
the oldest pending events are deleted; both are logged at WARNING/ERROR, never silent.

**Disk pressure is a state, not a traceback.** When the file cannot be written (disk full, I/O error,
read-only, locked) the outbox says so once (one ERROR line with counts), holds new events in memory (up
to `memory_events` / `memory_mib`, `held.py`) and keeps delivering from there, so while the dashboard
is up nothing waits for the disk at all. Rows of the file that were delivered meanwhile are remembered and
marked when the file takes writes again. Twice a second it tries the file again; the first write that
succeeds moves what is still held into the file and logs one INFO line with what the episode cost. Why it
used to stay stuck (a 4.2 MB journal after 1.9 MB freed): Debian's SQLite zeroes freed pages (secure_delete),
so dropping delivered images rewrote them all, into the WAL; and a WAL restarts only after a checkpoint copies
it back into the file, which needs the same space again. The file now uses a rollback journal (new pages are
not journalled, so an insert needs its own size free and no more) with secure_delete FAST (freed pages are not
copied first); freed pages are reused by the next events, so the file stops growing.
`health()` is the state (`ok`, `disk_full`, `degraded`) that status reports carry to the dashboard and the edge.

**Sealed at rest.** With a data key (`ring`) every value that says something about a person (the meta JSON, which
carries an unknown face's encoding and crop for the review queue, the evidence JPEGs, an open incident's details)
is sealed with `shared.crypto` (AES-GCM, associated data `outbox.<column>`) before it is written, and opened when
read; `reseal_rows` seals the rows a keyless run left plain (at start) or seals everything with a new key
(rotation). A file holding sealed rows is refused without the key, with a message naming the setting.

Incidents still open are kept in the file too (`open_incidents`), with a heartbeat of the sender thread.
A recognizer that dies without closing them (SIGKILL, power loss) closes them at its next start with
`closed_by: recognizer_restart`, ended at the last moment it was known alive, so none stays open forever.
"""
from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Protocol, Sequence

from recognizer.alerting import salvage
from recognizer.alerting.held import HeldEvent, HeldEvents
from recognizer.settings import check_section
from shared import sealed_files
from shared.alert_wire import AlertEvent, encode_event
from shared.backoff import Backoff
from shared.crypto import DataKeyError, KeyRing, is_sealed
from shared.lognames import who

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    event_id     TEXT PRIMARY KEY,
    alert_id     TEXT NOT NULL,
    payload      TEXT NOT NULL,            -- the dashboard's meta JSON (stored as UTF-8 bytes, sent as they are)
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
CREATE TABLE IF NOT EXISTS room (b BLOB);  -- the recovery probe's proof of free space (empty between probes)
"""
COLUMNS = ("event_id", "alert_id", "payload", "image", "best_image", "sinks_left", "parked", "attempts", "next_try_at",
           "created_at", "delivered_at", "last_error")
INCIDENT_COLUMNS = ("alert_id", "station_id", "login_name", "type", "started_at", "details", "updated_at")
SALVAGE_TABLES = (("outbox", COLUMNS, "WHERE delivered_at IS NULL", "payload"),
                  ("open_incidents", INCIDENT_COLUMNS, "", "details"))
HEARTBEAT_S = 5.0  # the sender notes it is alive this often (the end time of incidents a crash left open)
PROBE_S = 0.5  # while the file cannot be written, it is tried again this often
QUIET_S = 300.0  # a new episode this soon after the last recovery is a WARNING, not another ERROR
MIN_ROOM = 64 * 1024  # the probe proves room for this much before it calls the file writable again
SEALED = (("outbox", "event_id", ("payload", "image", "best_image")), ("open_incidents", "alert_id", ("details",)))



class TransientDeliveryError(Exception):
    """The sink could not take the event now (down, timeout, 408/429/5xx); retry later."""


class PermanentDeliveryError(Exception):
    """The sink refused the event for good (4xx); retrying would not help. The message says why."""


class OutboxError(RuntimeError):
    """The outbox could not store an event for a reason that is not disk pressure (a bug, a constraint)."""


class Sink(Protocol):
    name: str

    def deliver(self, meta: bytes, image: Optional[bytes], best_image: Optional[bytes]) -> None:
        """Deliver one event (its meta JSON as stored) or raise TransientDeliveryError / PermanentDeliveryError."""


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
    memory_events: int = 2000  # the file cannot be written: events held in memory at most (oldest dropped beyond)
    memory_mib: int = 64  # ... and their images at most, in MiB (oldest images dropped first)

    def __post_init__(self) -> None:
        if self.max_events < 10:
            raise ValueError(f"outbox max_events must be at least 10, got {self.max_events}")
        if self.max_bytes < 1024 * 1024:
            raise ValueError(f"outbox max_bytes must be at least 1 MiB, got {self.max_bytes}")
        if not 0 < self.backoff_initial_s <= self.backoff_max_s:
            raise ValueError("outbox back-off must satisfy 0 < initial <= max")
        if not 0 <= self.jitter < 1:
            raise ValueError(f"outbox jitter must be 0..1, got {self.jitter}")
        check_section(self, "outbox")  # memory_events, memory_mib: their flags' bounds


@dataclass(frozen=True)
class OutboxHealth:
    """What the outbox can do now: `state` ok | disk_full | degraded (other write failures), and its counts."""

    state: str = "ok"
    reason: str = ""
    since: float = 0.0  # time.time() the state began
    held: int = 0  # events in memory now
    lost: int = 0  # events dropped over the memory bound since the outbox started


def write_failure(exc: sqlite3.Error) -> Optional[str]:
    """'disk_full' or 'degraded' when `exc` says the file cannot be written now; None for any other error."""
    if not isinstance(exc, sqlite3.OperationalError):
        return None
    name = getattr(exc, "sqlite_errorname", "") or ""
    text = str(exc).lower()
    if name == "SQLITE_FULL" or "disk is full" in text:
        return "disk_full"
    if name.startswith(("SQLITE_IOERR", "SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_BUSY", "SQLITE_LOCKED")) or any(
            w in text for w in ("disk i/o error", "readonly database", "unable to open", "database is locked")):
        return "degraded"
    return None


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


@dataclass
class _Pressure:
    """One episode of a file that cannot be written."""

    kind: str
    reason: str
    since: float  # time.time()
    started: float  # monotonic
    held_before: int  # HeldEvents.held_total when it began
    lost_before: int
    from_memory: int = 0  # events delivered straight from memory in this episode
    said_lost: bool = False
    next_probe: float = 0.0


class Outbox:
    """The SQLite outbox and its sender thread. `put()` from any thread; `start()`/`stop()` the sender.

    `on_health` is called (on the sender thread) with the new `OutboxHealth` each time the state changes."""

    def __init__(self, config: OutboxConfig, sinks: Sequence[Sink], clock: Callable[[], float] = time.time,
                 on_health: Optional[Callable[[OutboxHealth], None]] = None, ring: Optional[KeyRing] = None) -> None:
        self.config = config
        self.ring = ring  # seals what the file holds about people (None: plain; see the module doc)
        self.sinks = {s.name: s for s in sinks}
        self._clock = clock
        self._on_health = on_health
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
        self._held = HeldEvents(config.memory_events, config.memory_mib * 2**20, self._placeholder_jpeg)
        self._pressure: Optional[_Pressure] = None
        self._marks: dict[str, tuple] = {}  # event_id -> _record's arguments not yet written (file not writable)
        self._incidents_todo: dict[str, AlertEvent] = {}  # alert_id -> last event not yet tracked in the file
        self._announced = "ok"
        self._recovered_at = float("-inf")  # monotonic time of the last recovery
        self._quiet_said = float("-inf")
        try:
            self._db = self._connect()
        except sqlite3.DatabaseError as exc:  # not a database, malformed: the recognizer runs on regardless
            if type(exc) is not sqlite3.DatabaseError:
                raise OutboxError(f"cannot open the outbox {config.path}: {exc}") from exc
            self._db = salvage.replace_damaged(config.path, None, exc, self._connect, SALVAGE_TABLES)
        try:
            sealed_now = reseal_rows(self._db, ring, only_plain=True)
        except DataKeyError:
            self._db.close()
            raise
        if sealed_now:  # and the plain pages it freed are gone from the file
            try:
                self._db.execute("VACUUM")
            except sqlite3.OperationalError as exc:
                log.warning("outbox %s: cannot compact it after sealing (%s); freed pages may keep plain "
                            "bytes until they are reused", config.path, exc)
            log.info("outbox %s: sealed %d value(s) a run without a data key had left plain", config.path, sealed_now)
        self._file_id = salvage.file_id(config.path)
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
            # a rollback journal: new pages are not journalled, so an insert needs its own size free and no more
            # (a WAL needs the same again to checkpoint; see the module doc); TRUNCATE keeps the journal's inode
            db.execute("PRAGMA journal_mode=TRUNCATE")
            # NORMAL, not FULL: survives a killed process; a power loss at the worst moment may damage the file, which
            # salvage.py then repairs (FULL measured p50 64 ms per put in the station thread, NORMAL 9 ms, loaded box)
            db.execute("PRAGMA synchronous=NORMAL")
            # Debian's SQLite is built with secure_delete on: every page freed (an image dropped after delivery)
            # is zeroed, so first copied whole into the journal: marking delivered needed as much free space as
            # the images it frees. FAST zeroes only what costs no extra I/O; freed pages are reused by new events.
            db.execute("PRAGMA secure_delete=FAST")
            db.executescript(SCHEMA)
            verdict = db.execute("PRAGMA quick_check").fetchone()[0]
            if verdict != "ok":
                first = verdict.replace("*** in database main ***", "").strip().splitlines()[0][:200]
                raise sqlite3.DatabaseError(f"integrity check failed: {first}")
        except sqlite3.DatabaseError:
            db.close()
            raise
        return db

    def _placeholder_jpeg(self) -> bytes:
        if self._placeholder is None:
            self._placeholder = placeholder_jpeg()
        return self._placeholder

    def _recount(self) -> None:
        count, size = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(image)) + 0, 0) + COALESCE(SUM(LENGTH(best_image)), 0) "
            "FROM outbox WHERE delivered_at IS NULL").fetchone()
        self._count, self._bytes = int(count), int(size)

    def _repair(self, exc: Exception) -> None:
        """Caller holds the lock: the file is damaged; a fresh one with what could be salvaged."""
        self._db = salvage.replace_damaged(self.config.path, self._db, exc, self._connect, SALVAGE_TABLES)
        self._file_id = salvage.file_id(self.config.path)
        self._recount()

    def _guard(self) -> None:
        """Caller holds the lock: notice a deleted or replaced file and recreate it; a failure is logged, not raised."""
        if salvage.file_id(self.config.path) == self._file_id:
            return
        try:
            self._db = salvage.recreate(self.config.path, self._db, self._connect)
        except (OSError, sqlite3.Error):
            log.exception("outbox: cannot recreate %s", self.config.path)
            return
        self._file_id = salvage.file_id(self.config.path)
        self._recount()

    # -- incidents a crash left open --
    def _track_incident(self, ev: AlertEvent, now: float) -> None:
        if ev.state == "closed":
            self._db.execute("DELETE FROM open_incidents WHERE alert_id = ?", (ev.alert_id,))
        else:
            self._db.execute(
                "INSERT OR REPLACE INTO open_incidents (alert_id, station_id, login_name, type, started_at, details, "
                "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (ev.alert_id, ev.station_id, ev.login_name, ev.type, ev.started_at,
                 self._seal(json.dumps(ev.details).encode(), "open_incidents", "details"), now))

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
                old = json.loads(self._open(details, "open_incidents", "details"))
            except ValueError:  # DataKeyError too: checked at start, so only a damaged value lands here
                old = {}
            ev = AlertEvent(uuid.uuid4().hex, alert_id, station, login, kind, "closed", started, ended,
                            {**(old if isinstance(old, dict) else {}), "closed_by": "recognizer_restart",
                             "duration_s": round(max(0.0, ended - started), 1)})
            log.info("alert %s closed station=%s login=%s alert_id=%s (recognizer restart)", kind, station, who(login), alert_id)
            if self.sinks:
                self.put(ev)
            else:
                self._db.execute("DELETE FROM open_incidents WHERE alert_id = ?", (alert_id,))

    def _beat(self) -> None:
        now = self._clock()
        if now - self._alive_written >= HEARTBEAT_S:
            with self._lock:
                if self._pressure is not None:
                    return  # the probe writes it once the file takes writes again
                try:
                    self._db.execute("INSERT OR REPLACE INTO heartbeat (id, alive_at) VALUES (1, ?)", (now,))
                except sqlite3.OperationalError as exc:
                    if write_failure(exc) is None:
                        raise
                    self._enter_pressure(exc)
                    return
            self._alive_written = now

    # -- writing (station threads) --
    def put(self, ev: AlertEvent) -> None:
        """Store one event for every configured sink (a single INSERT; safe from any thread). Never raises for disk
        pressure: the event is then held in memory (see the module doc)."""
        image = bytes(ev.image) if isinstance(ev.image, (bytes, bytearray)) else None
        best = bytes(ev.best_image) if isinstance(ev.best_image, (bytes, bytearray)) else None
        now = self._clock()
        payload = json.dumps(event_meta(ev), separators=(",", ":")).encode()
        if not self.sinks:
            return
        with self._lock:
            self._guard()
            if self._pressure is None:
                try:
                    self._store(ev, payload, image, best, now)
                except sqlite3.OperationalError as exc:
                    if write_failure(exc) is None:
                        raise OutboxError(f"cannot store alert event in {self.config.path}: {exc}") from exc
                    self._enter_pressure(exc)
                except sqlite3.Error as exc:
                    raise OutboxError(f"cannot store alert event in {self.config.path}: {exc}") from exc
            if self._pressure is not None:  # held in order behind what is already held
                self._hold(HeldEvent(ev.event_id, ev.alert_id, payload, image, best, sorted(self.sinks), now), ev)
        self._wake.set()

    def _store(self, ev: AlertEvent, payload: bytes, image: Optional[bytes], best: Optional[bytes], now: float) -> None:
        try:
            self._insert(ev.event_id, ev.alert_id, payload, image, best, sorted(self.sinks), now)
            self._track_incident(ev, now)
        except sqlite3.DatabaseError as exc:
            if type(exc) is not sqlite3.DatabaseError:  # locked, disk full, constraint: not damage
                raise
            self._repair(exc)
            self._insert(ev.event_id, ev.alert_id, payload, image, best, sorted(self.sinks), now)
            self._track_incident(ev, now)

    def _seal(self, value: Optional[bytes], table: str, column: str) -> Optional[bytes]:
        return None if value is None else sealed_files.seal(value, self.ring, f"{table}.{column}")

    def _open(self, value: Optional[bytes | str], table: str, column: str) -> Optional[bytes]:
        if value is None:
            return None
        value = value.encode() if isinstance(value, str) else bytes(value)
        return sealed_files.unseal(value, self.ring, f"{table}.{column}", f"the outbox {self.config.path}")

    def _insert(self, event_id: str, alert_id: str, payload: bytes, image: Optional[bytes], best: Optional[bytes],
                sinks: list[str], now: float) -> None:
        cur = self._db.execute(
            "INSERT OR IGNORE INTO outbox (event_id, alert_id, payload, image, best_image, sinks_left, next_try_at, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (event_id, alert_id, self._seal(payload, "outbox", "payload"), self._seal(image, "outbox", "image"),
             self._seal(best, "outbox", "best_image"), json.dumps(sinks), now, now))
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
                meta = json.loads(self._open(payload, "outbox", "payload"))
                new_image = self._placeholder_jpeg() if meta.get("state") == "open" and n_img else None
                meta.setdefault("details", {})["evidence_dropped"] = True
                self._db.execute("UPDATE outbox SET image = ?, best_image = NULL, payload = ? WHERE event_id = ?",
                                 (self._seal(new_image, "outbox", "image"),
                                  self._seal(json.dumps(meta, separators=(",", ":")).encode(), "outbox", "payload"),
                                  event_id))
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
                meta = _meta(self._open(payload, "outbox", "payload"))
                log.error("outbox holds more than %d pending events: dropping the oldest, %s %s of alert %s (station %s)",
                          cfg.max_events, meta.get("type"), meta.get("state"), alert_id, meta.get("station_id"))
                self._db.execute("DELETE FROM outbox WHERE event_id = ?", (event_id,))
                self._count -= 1
                self._bytes -= size

    # -- disk pressure --
    def _enter_pressure(self, exc: sqlite3.Error) -> None:
        """Caller holds the lock: the file stopped taking writes. Said once, with counts."""
        if self._pressure is not None:
            return
        kind = write_failure(exc) or "degraded"
        self._pressure = _Pressure(kind, str(exc), time.time(), time.monotonic(), self._held.held_total, self._held.lost)
        if time.monotonic() - self._recovered_at < QUIET_S:  # the space freed was used up again: said already
            if time.monotonic() - self._quiet_said >= 60:
                self._quiet_said = time.monotonic()
                log.warning("outbox %s cannot write again (%s): holding new alert events in memory (said at most "
                            "once a minute)", self.config.path, exc)
            return
        log.error("OUTBOX CANNOT WRITE %s (%s%s): %d event(s) pending in the file; new alert events are held in memory "
                  "(at most %d events / %.0f MiB) and delivered from there; it recovers by itself as soon as the file can be "
                  "written", self.config.path, exc, ", the disk is full" if kind == "disk_full" else "",
                  self._count, self.config.memory_events, self.config.memory_mib)

    def _hold(self, held: HeldEvent, ev: AlertEvent) -> None:
        self._incidents_todo.pop(ev.alert_id, None)
        self._incidents_todo[ev.alert_id] = ev
        dropped = self._held.add(held)
        p = self._pressure
        if dropped and p is not None and not p.said_lost:
            p.said_lost = True
            log.error("outbox: the memory bound (%d events / %.0f MiB) is reached while %s cannot be written and the "
                      "sinks do not take them: dropping the oldest held events (counted; the total is logged at "
                      "recovery)", self.config.memory_events, self.config.memory_mib, self.config.path)

    def _probe(self) -> None:
        """Sender thread: while under pressure, try the file again; on success move the held events into it."""
        p = self._pressure
        if p is None or time.monotonic() < p.next_probe:
            return
        p.next_probe = time.monotonic() + PROBE_S
        with self._lock:
            try:
                # room first, in the file itself: pages written and freed stay in the file and the next insert
                # reuses them, so "writable" means a typical event fits (an evidence JPEG), not that a few bytes did
                self._db.execute("INSERT INTO room (b) VALUES (zeroblob(?))", (MIN_ROOM,))
                self._db.execute("DELETE FROM room")
                for event_id, args in list(self._marks.items()):
                    self._write_record(event_id, *args)
                    del self._marks[event_id]
                for alert_id, ev in list(self._incidents_todo.items()):
                    self._track_incident(ev, self._clock())
                    del self._incidents_todo[alert_id]
                moved = 0
                for held in self._held:
                    if held.sinks_left:
                        self._insert(held.event_id, held.alert_id, held.payload, held.image, held.best_image,
                                     held.sinks_left, held.created_at)
                        moved += 1
                    self._held.remove(held.event_id)
                self._db.execute("INSERT OR REPLACE INTO heartbeat (id, alive_at) VALUES (1, ?)", (self._clock(),))
            except sqlite3.OperationalError as exc:
                if write_failure(exc) is None:
                    raise
                log.debug("outbox: probe failed: %s", exc)
                return
            self._pressure = None
            self._recovered_at = time.monotonic()
            lost = self._held.lost - p.lost_before
        log.info("outbox %s takes writes again after %.1f s: %d event(s) were held in memory, %d delivered from "
                 "there and %d written to the file now; %d lost over the memory bound", self.config.path,
                 time.monotonic() - p.started, self._held.held_total - p.held_before, p.from_memory, moved, lost)
        self._wake.set()

    def health(self) -> OutboxHealth:
        with self._lock:
            p = self._pressure
            if p is None:
                return OutboxHealth(lost=self._held.lost)
            return OutboxHealth(p.kind, p.reason, p.since, len(self._held), self._held.lost)

    def _announce(self) -> None:
        state = self.health()
        if state.state != self._announced and self._on_health is not None:
            try:
                self._on_health(state)
            except Exception:  # the status path failing must not stop deliveries; logged with its trace
                log.exception("outbox: telling the new state %s failed", state.state)
        self._announced = state.state

    # -- reading --
    def pending(self) -> int:
        """Events not yet delivered everywhere: in the file and held in memory."""
        with self._lock:
            return self._count + len(self._held)

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
        if self._pressure is not None:
            self._pressure.next_probe = 0.0
            self._probe()
        with self._lock:
            self._guard()
            left, held = self._count, len(self._held)
            self._db.close()
        if held:
            log.error("outbox stopped with %d event(s) held in memory that %s could not take: they are lost",
                      held, self.config.path)
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
        """The oldest pending events still owed to `sink` (less those delivered while the file took no writes)."""
        with self._lock:
            marked = {e for e, args in self._marks.items() if _marked_done(args, sink)}
            rows = self._db.execute(
                "SELECT event_id, payload, image, best_image FROM outbox WHERE delivered_at IS NULL "
                "AND instr(sinks_left, ?) > 0 ORDER BY created_at, rowid LIMIT ?",
                (json.dumps(sink), limit + len(marked))).fetchall()
        return [(e, self._open(p, "outbox", "payload"), self._open(i, "outbox", "image"),
                 self._open(b, "outbox", "best_image")) for e, p, i, b in rows if e not in marked][:limit]

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
                self._probe()
                self._beat()
                self._announce()
                sent = self._pass()
            except sqlite3.DatabaseError as exc:
                sent = 0
                if type(exc) is sqlite3.DatabaseError:  # malformed / not a database: damage, not a busy file
                    with self._lock:
                        self._repair(exc)
                    continue
                log.exception("outbox database error; retrying in 5 s")
                self._stop.wait(5)
            if sent:
                continue
            now = self._clock()
            waits = [t - now for t in self._sink_next.values() if t > now]
            if self._pressure is not None:
                waits.append(PROBE_S)
            self._wake.wait(min(waits + [5.0]))
            self._wake.clear()

    def _pass(self) -> int:
        """For each sink not backing off, deliver its oldest batch (the file's, then the memory's) until one fails.
        Returns deliveries made."""
        done = 0
        for name, sink in self.sinks.items():
            if self._sink_next[name] > self._clock():
                continue
            rows = self._rows(name, self.config.batch)
            ok = True
            for event_id, payload, image, best in rows:
                if self._stop.is_set():
                    return done
                result = self._deliver(sink, event_id, payload, image, best)
                if result is None:
                    ok = False
                    break  # keep this sink's order: nothing newer goes before this one
                self._record(event_id, name, result, None if not result else f"{name}: {result[name]}")
                done += not result
            if not ok or len(rows) == self.config.batch:
                continue
            for held in self._held_for(name):  # the file owes this sink nothing more: what memory holds
                if self._stop.is_set():
                    return done
                result = self._deliver(sink, held.event_id, held.payload, held.image, held.best_image)
                if result is None:
                    break
                self._held_done(held, name, result)
                done += not result
        return done

    def _deliver(self, sink: Sink, event_id: str, payload: bytes, image: Optional[bytes],
                 best: Optional[bytes]) -> Optional[dict[str, str]]:
        """One try: None = failed for now (backed off), {} = delivered, {sink: reason} = refused for good."""
        name = sink.name
        try:
            sink.deliver(payload, image, best)
        except TransientDeliveryError as exc:
            self._backoff(name, str(exc))
            self._record(event_id, None, {}, f"{name}: {exc}")
            return None
        except PermanentDeliveryError as exc:
            meta = _meta(payload)
            log.error("outbox: %s refused %s %s of alert %s for good (event %s), parked: %s",
                      name, meta.get("type"), meta.get("state"), meta.get("alert_id"), event_id, exc)
            return {name: str(exc)}
        if self._sink_backoff[name].failures:
            log.info("outbox: sink %s is reachable again", name)
        self._sink_backoff[name].reset()
        return {}

    def _held_for(self, sink: str) -> list[HeldEvent]:
        with self._lock:
            return [h for h in self._held if sink in h.sinks_left]

    def _held_done(self, held: HeldEvent, sink: str, parked: dict[str, str]) -> None:
        with self._lock:
            held.sinks_left = [n for n in held.sinks_left if n != sink]
            held.parked.update(parked)
            if not held.sinks_left and self._held.remove(held.event_id) is not None and self._pressure is not None:
                self._pressure.from_memory += 1

    def _backoff(self, name: str, reason: str) -> None:
        backoff = self._sink_backoff[name]
        delay = backoff.next_delay()
        n = backoff.failures
        self._sink_next[name] = self._clock() + delay
        level = logging.WARNING if n in (1, 10) or n % 60 == 0 else logging.DEBUG
        log.log(level, "outbox: sink %s failed (%s); attempt %d, next try in %.1f s", name, reason, n, delay)

    def _record(self, event_id: str, done_sink: Optional[str] | list, parked: dict[str, str], error: Optional[str]) -> None:
        """After one try: `done_sink` (a name, or the new list of sinks left) is no longer owed; None = failed, retry.

        When the file takes no writes the outcome is kept in memory (`_marks`) and written by the probe."""
        with self._lock:
            if event_id in self._marks:
                if done_sink is None:
                    return
                old_sink, old_parked, _ = self._marks.pop(event_id)
                self._marks[event_id] = (_merge(old_sink, done_sink), {**old_parked, **parked}, error)
                return
            try:
                self._write_record(event_id, done_sink, parked, error)
            except sqlite3.OperationalError as exc:
                if write_failure(exc) is None:
                    raise
                self._enter_pressure(exc)
                if done_sink is not None:
                    self._marks[event_id] = (done_sink, parked, error)

    def _write_record(self, event_id: str, done_sink: Optional[str] | list, parked: dict[str, str],
                      error: Optional[str]) -> None:
        """Caller holds the lock. Raises sqlite3.OperationalError when the file takes no writes."""
        now = self._clock()
        row = self._db.execute("SELECT sinks_left, COALESCE(LENGTH(image), 0) + COALESCE(LENGTH(best_image), 0) "
                               "FROM outbox WHERE event_id = ? AND delivered_at IS NULL", (event_id,)).fetchone()
        if row is None:
            return
        left = json.loads(row[0])
        if done_sink is None:
            if self._pressure is not None:
                return  # a failed try is not worth a write the file cannot take
            next_try = min([self._sink_next[n] for n in left if n in self._sink_next] or [now])
            self._db.execute("UPDATE outbox SET attempts = attempts + 1, last_error = ?, next_try_at = ? WHERE event_id = ?",
                             (error, next_try, event_id))
            return
        if isinstance(done_sink, list):
            left = done_sink
        else:
            gone = set(done_sink.split("\0"))
            left = [n for n in left if n not in gone]
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


def _marked_done(args: tuple, sink: str) -> bool:
    done = args[0]
    return sink not in done if isinstance(done, list) else sink in done.split("\0")


def _merge(old: str | list, new: str | list) -> str | list:
    """Two outcomes of one row recorded while the file took no writes: the sinks done by either."""
    if isinstance(new, list):
        return new
    if isinstance(old, list):
        return [n for n in old if n != new]
    return "\0".join(sorted(set(old.split("\0")) | {new}))


def _meta(payload: bytes) -> dict:
    """The stored meta JSON, parsed only to name an event in a log line."""
    try:
        meta = json.loads(payload)
    except ValueError:
        return {}
    return meta if isinstance(meta, dict) else {}


def reseal_rows(db: sqlite3.Connection, ring: Optional[KeyRing], only_plain: bool) -> int:
    """Seal the outbox's person data with `ring`'s current key: the plain values (`only_plain`, at start) or every
    value not sealed with that key (rotation). Returns values rewritten. Without a ring: DataKeyError when any value
    is sealed (the file cannot be read without the key). With one: DataKeyError when a sealed value does not open
    (one per column is tried at start; a rotation opens each)."""

    done = 0
    began = ring is not None and not db.in_transaction  # without a ring it only reads the headers
    if began:
        db.execute("BEGIN IMMEDIATE")
    try:
        done = _reseal(db, ring, only_plain)
    except BaseException:
        if began:
            db.execute("ROLLBACK")
        raise
    if began:
        db.execute("COMMIT")
    return done


def _reseal(db: sqlite3.Connection, ring: Optional[KeyRing], only_plain: bool) -> int:
    from shared.crypto import ID_BYTES, MAGIC, key_id

    done = 0
    for table, pk, cols in SEALED:
        for col in cols:
            purpose, where = f"{table}.{col}", f"the outbox's {table}.{col}"
            heads = db.execute(f"SELECT {pk}, substr(CAST({col} AS BLOB), 1, {len(MAGIC) + ID_BYTES}) FROM {table} "
                               f"WHERE {col} IS NOT NULL").fetchall()  # headers only: images stay on disk
            tried = False
            for key, head in heads:
                sealed, kid = head[:len(MAGIC)] == MAGIC, head[len(MAGIC):]
                if ring is None:
                    if sealed:
                        raise DataKeyError(f"{where} holds encrypted values and no data key is configured: "
                                           f"{sealed_files.KEY_HINT}")
                    continue
                if sealed and (only_plain or kid == key_id(ring.current)) and tried:
                    continue
                (value,) = db.execute(f"SELECT {col} FROM {table} WHERE {pk} = ?", (key,)).fetchone()
                raw = value.encode() if isinstance(value, str) else bytes(value)
                plain = sealed_files.unseal(raw, ring, purpose, where)  # a wrong key fails here
                if sealed and (only_plain or kid == key_id(ring.current)):
                    tried = True
                    continue
                db.execute(f"UPDATE {table} SET {col} = ? WHERE {pk} = ?", (ring.seal(plain, purpose), key))
                done += 1
    return done
