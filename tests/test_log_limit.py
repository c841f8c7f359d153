"""Refusal log lines rate-limited with a counter (shared/log_limit.py)."""
from __future__ import annotations

import logging
import time

from shared.log_limit import RateLimitedLog


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_lines_beyond_the_budget_are_counted_and_told_once(caplog):
    clock = Clock()
    limited = RateLimitedLog(logging.getLogger("test.refusals"), "refused logins", per_window=10, window_s=60,
                             clock=clock, timer=False)
    with caplog.at_level(logging.INFO, "test.refusals"):
        for i in range(8656):
            limited.warning("login for %r refused", f"u{i}")
        assert len([r for r in caplog.records if r.name == "test.refusals"]) == 10
        clock.now += 61
        limited.warning("one more")
    lines = [r.getMessage() for r in caplog.records if r.name == "test.refusals"]
    assert lines[10] == "refused logins: ... and 8,646 more in the last minute" and lines[11] == "one more"


def test_the_summary_comes_by_itself_when_the_flood_stops(caplog):
    limited = RateLimitedLog(logging.getLogger("test.refusals2"), "refused", per_window=2, window_s=0.3)
    with caplog.at_level(logging.INFO, "test.refusals2"):
        for _ in range(7):
            limited.warning("refused")
        deadline = time.time() + 5
        mine = lambda: [r.getMessage() for r in caplog.records if r.name == "test.refusals2"]  # noqa: E731
        while time.time() < deadline and len(mine()) < 3:
            time.sleep(0.05)
    assert mine() == ["refused", "refused", "refused: ... and 5 more in the last 0.3 s"]
