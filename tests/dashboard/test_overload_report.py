"""The recognizer says it is overloaded itself: when its fair share per desk falls under --station-fps, its status
reports carry `slow` and the dashboard shows the desk as slow with a sentence (a real reporter, a real server)."""
from __future__ import annotations

import time

from recognizer.alerting.sinks import DashboardTarget, StatusReporter
from recognizer.server.pacing import FairShare, PacingParams
from recognizer.station.types import StationSnapshot
from tests.dashboard.conftest import login


def test_a_short_share_is_reported_slow_and_shown_with_a_sentence(live_server, sqlite_tokens):
    share = FairShare(PacingParams(station_fps=5, max_fps=30, warmup_frames=5), cores=1)
    for _ in range(20):
        share.frame_cost(0.1)  # 100 ms a frame on one core at 0.9: 9 frames/s in all
    now = time.time()
    desk = StationSnapshot(session=1, station="desk-01", login="alice", peer="127.0.0.1:1", connected_at=now - 30,
                           frames=100, last_seen=now, fps=2.2, last_frame_at=now, camera="ok")
    reporter = StatusReporter(DashboardTarget(live_server.url, sqlite_tokens.service), lambda: [desk],
                              overloaded=lambda: share.short)
    client = live_server.app.test_client()
    login(client)

    def shown() -> dict:
        reporter.report_once()
        return {s["station_id"]: s for s in client.get("/api/stations").json["stations"]}["desk-01"]

    assert share.rate(1) == 9.0 and not share.short  # one desk: served 9 frames/s, more than the 5 planned
    assert shown()["state"] == "online"
    assert share.rate(4) == 2.2 and share.short  # four desks: 2.2 each, under the 5 planned
    row = shown()
    assert row["state"] == "slow", row
    assert "Recognizer overloaded: it serves each desk 2.2 frames/s, too few for reliable checks" in row["state_text"]
    assert "too many desks for this recognizer" in row["state_text"]
    share.rate(1)  # back to one desk: the next report says nothing is wrong
    assert shown()["state"] == "online"
