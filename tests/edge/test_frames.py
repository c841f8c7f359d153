"""LatestFrame hand-off and the rate meter: pure, no camera."""
from __future__ import annotations

import threading

from edge.frames import LatestFrame, RateMeter


def test_wait_for_frame_never_hands_the_same_frame_twice() -> None:
    holder: LatestFrame[int] = LatestFrame()
    first = holder.publish(10)
    assert holder.wait_for_frame(0, timeout=0.1) == first
    assert holder.wait_for_frame(first.seq, timeout=0.05) is None  # nothing newer yet
    holder.publish(11)
    third = holder.publish(12)
    got = holder.wait_for_frame(first.seq, timeout=0.1)
    assert got == third and got.data == 12  # only the newest, the skipped one is gone


def test_every_waiter_wakes_for_a_new_frame() -> None:
    holder: LatestFrame[str] = LatestFrame()
    got: list = []
    threads = [threading.Thread(target=lambda: got.append(holder.wait_for_frame(0, timeout=5))) for _ in range(4)]
    for t in threads:
        t.start()
    holder.publish("jpeg")
    for t in threads:
        t.join(5)
    assert [f.data for f in got] == ["jpeg"] * 4


def test_close_wakes_waiters_with_none() -> None:
    holder: LatestFrame[int] = LatestFrame()
    result: list = []
    t = threading.Thread(target=lambda: result.append(holder.wait_for_frame(0, timeout=5)))
    t.start()
    holder.close()
    t.join(5)
    assert result == [None] and holder.closed


def test_rate_meter_counts_events_in_its_window() -> None:
    meter = RateMeter(window_s=2.0)
    assert meter.rate(now=0.0) == 0.0
    for i in range(11):
        meter.tick(now=i * 0.1)  # 10 intervals over 1 s
    assert abs(meter.rate(now=1.0) - 10.0) < 1e-9
    assert meter.rate(now=10.0) == 0.0  # all aged out
