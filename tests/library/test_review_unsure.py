"""Not-sure faces reach the review queue apart from the alerts: which tracks are picked (pure), and the poster's
limits against a real HTTP receiver (bounded queue, rate per minute, retries of a transient failure)."""
from __future__ import annotations

import base64
import time

import numpy as np
import pytest

from recognizer.alerting.review import ReviewItem, ReviewPicker, ReviewPoster, ReviewThresholds
from shared.results import KNOWN, UNKNOWN, UNSURE, FaceResult
from tests.alerts.conftest import Receiver

VEC = np.ones(128, "<f4").tobytes()
CROP = b"\xff\xd8\xff" + b"x" * 50


def face(track: int, state: str = UNSURE, side: int = 100, candidate: str = "alex") -> FaceResult:
    return FaceResult((0, side, side, 0), track, state, distance=0.59, candidate=candidate if state == UNSURE else None,
                      review=(VEC, CROP) if state != KNOWN else None)


def test_a_not_sure_track_is_sent_once_after_the_wait_and_again_only_with_a_much_better_crop() -> None:
    ids = iter(f"{i:032x}" for i in range(100))
    p = ReviewPicker("desk-01", ReviewThresholds(after_s=3.0, gap_s=1.0, station_every_s=0), new_id=lambda: next(ids))
    out = [(t, p.observe(t, [face(1, side=100 + int(t))])) for t in np.arange(0, 10, 0.5)]
    sent = [(t, items) for t, items in out if items]
    assert len(sent) == 1 and sent[0][0] == 3.0, "once, when the track has been not sure for 3 s"
    body = sent[0][1][0].body
    assert body["verdict"] == UNSURE and body["candidate"] == "alex" and body["track"] == 1 and body["station_id"] == "desk-01"
    assert base64.b64decode(body["vector"]) == VEC and body["alert_id"] == f"{0:032x}"
    # the track ends with a crop only ~5 % larger: nothing more; a track whose crop grew 1.5x: its replacement
    assert p.observe(12.0, []) == []
    sent = [i for t in np.arange(20, 23.5, 0.5) for i in p.observe(t, [face(2, side=130)])]
    assert len(sent) == 1 and sent[0].area == 130 * 130
    assert not any(p.observe(t, [face(2, side=170)]) for t in np.arange(23.5, 25, 0.5))
    end = p.observe(30.0, [])
    assert len(end) == 1 and end[0].body["alert_id"] == f"{1:032x}" and end[0].area == 170 * 170


def test_named_unknown_and_short_tracks_send_nothing_and_a_desk_sends_at_most_one_per_interval() -> None:
    p = ReviewPicker("desk-01", ReviewThresholds(after_s=3.0, gap_s=1.0, station_every_s=30))
    assert not any(p.observe(t, [face(1, UNKNOWN)]) for t in np.arange(0, 10, 0.5)), "unknown: its alert carries it"
    assert not any(p.observe(t, [face(2)] if t < 12.5 else [face(2, KNOWN)]) for t in np.arange(10, 20, 0.5)), \
        "not sure for 2.5 s, then named: nothing"
    seen = [p.observe(t, [face(3), face(4), face(5)]) for t in np.arange(20, 60, 0.5)]
    times = [t for t, items in zip(np.arange(20, 60, 0.5), seen) for _ in items]
    assert times == [23.0, 53.0], "three not-sure faces at one desk: one every 30 s"
    with pytest.raises(ValueError, match="gain"):
        ReviewThresholds(gain=0.5)


def _item(i: int) -> ReviewItem:
    return ReviewItem({"alert_id": f"{i:032x}", "track": i}, 1.0)


def test_the_poster_retries_a_transient_failure_bounds_its_queue_and_its_rate() -> None:
    rx = Receiver(script=(503, 400))
    poster = ReviewPoster(rx.url, "tok", ReviewThresholds(per_minute=3, queue=4, retries=2))
    try:
        for i in range(10):  # all at once, before the thread runs: the queue keeps the newest 4
            poster.put(_item(i))
        assert poster.stats.dropped == 6
        poster.start()
        deadline = time.time() + 10
        while len(rx.requests) < 4 and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        # 6 (503, retried) 6 again (400: refused, not retried) 7, 8; then the rate limit (3 a minute) holds 9
        assert [b["track"] for b in rx.json_bodies()] == [6, 6, 7, 8]
        assert rx.requests[0][0] == "/api/review/faces" and rx.requests[0][1]["Authorization"] == "Bearer tok"
        assert poster.stats.posted == 2 and poster.stats.dropped == 7 and poster.stats.deferred >= 1
    finally:
        poster.stop()
        rx.stop()
