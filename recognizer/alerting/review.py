"""Not-sure faces for the dashboard's review queue: one best crop per track, posted apart from the alerts.

An unknown face reaches the queue with its `unknown_face` alert (`rules.review_face`). A not-sure face (someone
within the vote radius, nobody accepted) raises no alert, by design (it is not a stranger), yet it is the face an
admin most needs to see to say "not <person>". So:

- `ReviewPicker` (pure, one per station session) picks, for each track that has been not sure for `after_s`
  (gaps up to `gap_s`), its largest crop so far, once; once more when the track ends, only if a crop `gain` times
  larger came meanwhile (the queue replaces the face of the same id and track). A track that is named meanwhile
  is dropped. At most one new track per station every `station_every_s`.
- `ReviewPoster` posts them to `POST /api/review/faces` from one thread: at most `per_minute` a minute over all
  stations, a bounded queue (the oldest dropped first when full, counted), `retries` retries of a transient
  failure, then the face is dropped with a log line.

Best effort by design, not the alert outbox: a lost crop costs the admin one face to label, never an alert, and the
alert list supervisors watch gets nothing from here (no incident, no webhook).
"""
from __future__ import annotations

import base64
import collections
import datetime as dt
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

from recognizer.station.types import FrameOutcome, StationSnapshot
from recognizer.settings import check_section
from shared.results import KNOWN, UNSURE, FaceResult

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReviewThresholds:
    """When a not-sure track is sent, and how many may be. Seconds; `gain` is a ratio of crop areas."""

    after_s: float = 3.0
    gap_s: float = 1.5
    gain: float = 1.5
    station_every_s: float = 30.0
    per_minute: int = 30
    queue: int = 64
    retries: int = 3

    def __post_init__(self) -> None:
        check_section(self, "review")  # after_s (--review-after), per_minute (--review-per-minute): their bounds
        for name in ("gap_s", "station_every_s"):  # no flag
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 86400:
                raise ValueError(f"review {name} must be 0..86400 seconds, got {value!r}")
        if self.gain < 1.0:
            raise ValueError(f"review gain must be >= 1, got {self.gain}")
        if not 1 <= self.queue <= 10000 or not 0 <= self.retries <= 100:
            raise ValueError("review queue must be 1..10000, retries 0..100")


@dataclass(frozen=True)
class ReviewItem:
    """One not-sure face for the queue: the body of `POST /api/review/faces`."""

    body: dict
    area: float


@dataclass
class _Track:
    review_id: str
    since: float
    last: float
    best: Optional[FaceResult] = None
    best_t: float = 0.0
    sent_area: float = 0.0


class ReviewPicker:
    """The not-sure faces of one station session worth queuing. Feed `observe()` every frame, in time order."""

    def __init__(self, station_id: str, thresholds: ReviewThresholds = ReviewThresholds(),
                 new_id: Callable[[], str] = lambda: uuid.uuid4().hex) -> None:
        self.station_id = station_id
        self.th = thresholds
        self._new_id = new_id
        self._tracks: dict[int, _Track] = {}
        self._last_new = float("-inf")

    def observe(self, t: float, faces: Sequence[FaceResult]) -> list[ReviewItem]:
        out: list[ReviewItem] = []
        seen = set()
        for f in faces:
            if f.state == KNOWN:
                self._tracks.pop(f.track, None)
                continue
            if f.state != UNSURE or f.review is None:
                continue  # unknown (its alert carries it) or pending: a gap for this track
            seen.add(f.track)
            tr = self._tracks.get(f.track)
            if tr is None:
                tr = self._tracks[f.track] = _Track(self._new_id(), t, t)
            elif t - tr.last > self.th.gap_s:
                tr.since = t
            tr.last = t
            if tr.best is None or f.area > tr.best.area:
                tr.best, tr.best_t = f, t
            if not tr.sent_area and t - tr.since >= self.th.after_s and t - self._last_new >= self.th.station_every_s:
                self._last_new = t
                out.append(self._item(tr))
        for track, tr in list(self._tracks.items()):
            if track not in seen and t - tr.last > self.th.gap_s:
                out.extend(self._end(track))
        return out

    def close_all(self) -> list[ReviewItem]:
        """The session ended: the better crops of the tracks already sent."""
        return [item for track in list(self._tracks) for item in self._end(track)]

    def _end(self, track: int) -> list[ReviewItem]:
        tr = self._tracks.pop(track)
        if tr.sent_area and tr.best is not None and tr.best.area >= tr.sent_area * self.th.gain:
            return [self._item(tr)]
        return []

    def _item(self, tr: _Track) -> ReviewItem:
        f = tr.best
        assert f is not None and f.review is not None
        tr.sent_area = f.area
        vector, crop = f.review
        return ReviewItem({
            "alert_id": tr.review_id, "station_id": self.station_id, "track": f.track, "verdict": UNSURE,
            "vector": base64.b64encode(vector).decode(), "crop": base64.b64encode(crop).decode(),
            "candidate": f.candidate, "distance": f.distance,
            "seen_at": dt.datetime.fromtimestamp(tr.best_t, dt.timezone.utc).isoformat()}, f.area)


@dataclass
class PosterStats:
    posted: int = 0
    dropped: int = 0  # the queue was full (oldest dropped), or refused / failed past the retries
    deferred: int = 0  # waited for the rate limit


class ReviewPoster:
    """Posts review faces to the dashboard from one thread; `put` never blocks (a bounded queue)."""

    def __init__(self, url: str, token: str, thresholds: ReviewThresholds = ReviewThresholds(),
                 send: Optional[Callable[[dict], int]] = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.url = url.rstrip("/") + "/api/review/faces"
        self.token = token
        self.th = thresholds
        self._send = send or self._post
        self._clock = clock
        self._queue: collections.deque[ReviewItem] = collections.deque()
        self._sent_at: collections.deque[float] = collections.deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: Optional[threading.Thread] = None
        self.stats = PosterStats()

    def put(self, item: ReviewItem) -> None:
        with self._cond:
            if len(self._queue) >= self.th.queue:
                self._queue.popleft()
                self.stats.dropped += 1
                log.warning("review queue of the poster is full (%d): the oldest not-sure face dropped", self.th.queue)
            self._queue.append(item)
            self._cond.notify()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="review-poster", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 3.0) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _post(self, body: dict) -> int:
        from shared.http import HttpError, post_json

        try:
            return post_json(self.url, body, self.token).status
        except HttpError as exc:
            log.info("review face not posted yet: %s", exc)
            return 503 if exc.transient else 400

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
                now = self._clock()
                while self._sent_at and now - self._sent_at[0] >= 60.0:
                    self._sent_at.popleft()
                if len(self._sent_at) >= self.th.per_minute:  # the rate limit: wait for the oldest post to age out
                    self.stats.deferred += 1
                    self._cond.wait(60.0 - (now - self._sent_at[0]))
                    continue
                item = self._queue.popleft()
                self._sent_at.append(now)
            self._deliver(item)

    def _deliver(self, item: ReviewItem) -> None:
        delay = 0.5
        for attempt in range(self.th.retries + 1):
            status = self._send(item.body)
            if 200 <= status < 300:
                self.stats.posted += 1
                return
            if status not in (408, 429) and status < 500:
                break
            with self._cond:
                if self._stopping or attempt == self.th.retries:
                    break
                self._cond.wait(delay)
            delay = min(delay * 2, 10.0)
        self.stats.dropped += 1
        log.warning("not-sure face of %s (track %s) not queued for review: HTTP %s",
                    item.body.get("station_id"), item.body.get("track"), status)


@dataclass
class ReviewMonitor:
    """The server's station observer for not-sure faces: one `ReviewPicker` per station session, items to `put`."""

    put: Callable[[ReviewItem], None]
    thresholds: ReviewThresholds = field(default_factory=ReviewThresholds)
    clock: Callable[[], float] = time.time

    def __post_init__(self) -> None:
        self._pickers: dict[int, ReviewPicker] = {}
        self._lock = threading.Lock()

    def on_frame(self, status: StationSnapshot, outcome: FrameOutcome, raw_jpeg: bytes) -> None:
        if not any(f.state == UNSURE for f in outcome.faces) and status.session not in self._pickers:
            return
        with self._lock:
            picker = self._pickers.get(status.session)
            if picker is None:
                picker = self._pickers[status.session] = ReviewPicker(status.station, self.thresholds)
        for item in picker.observe(self.clock(), outcome.faces):
            self.put(item)

    def on_camera(self, status: StationSnapshot) -> None:
        pass

    def on_disconnect(self, status: StationSnapshot, reason: str) -> None:
        with self._lock:
            picker = self._pickers.pop(status.session, None)
        for item in picker.close_all() if picker is not None else ():
            self.put(item)
