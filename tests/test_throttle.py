"""The sign-in throttle's pure core (shared/throttle.py): tries reserved before they are checked, so N at once
get no more checks than N one by one; nothing is ever locked."""
from __future__ import annotations

import threading

import pytest

from shared.throttle import FailureThrottle, InFlight, TooManyFailures


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def reserve_at_once(throttle: FailureThrottle, key: str, n: int) -> list:
    gate, tries, refused = threading.Barrier(n), [], []

    def one() -> None:
        gate.wait()
        try:
            tries.append(throttle.begin(key))
        except TooManyFailures as exc:
            refused.append(exc)

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return tries


def test_tries_at_once_are_held_to_the_free_allowance_then_delayed():
    clock = Clock()
    throttle = FailureThrottle(free=5, clock=clock)
    tries = reserve_at_once(throttle, "desk|eva", 100)
    assert len(tries) == 5  # not 100
    for t in tries:
        t.failed()
    with pytest.raises(TooManyFailures) as exc:
        throttle.begin("desk|eva")
    assert exc.value.retry_after == 6  # 5 s after the 5th failure
    clock.now += 5.1
    one = throttle.begin("desk|eva")
    with pytest.raises(TooManyFailures):  # while that one is being checked, nobody else
        throttle.begin("desk|eva")
    one.failed()
    clock.now += 9.9
    with pytest.raises(TooManyFailures):  # 10 s after the 6th
        throttle.begin("desk|eva")
    assert throttle.begin("desk|ada")  # another key is never slowed


def test_abandoned_and_successful_tries_count_as_nothing_and_clear():
    clock = Clock()
    throttle = FailureThrottle(free=2, clock=clock)
    with throttle.begin("k"):
        pass  # left without a verdict (the service was down): not a failure
    throttle.begin("k").failed()
    throttle.begin("k").succeeded()  # the right password clears the key
    assert throttle.wait_s("k") == 0
    stuck = throttle.begin("k")  # never finished: given up after hold_s
    throttle.begin("k")
    with pytest.raises(TooManyFailures):
        throttle.begin("k")
    clock.now += throttle.hold_s + 1
    assert throttle.begin("k") and stuck.done is False


def test_keys_are_bounded_but_one_with_a_try_in_flight_is_kept():
    throttle = FailureThrottle(free=1, max_keys=10)
    held = throttle.begin("held")
    for i in range(50):
        throttle.failed(f"k{i}")
    assert len(throttle._keys) <= 11 and "held" in throttle._keys
    held.abandon()


def test_in_flight_counts_the_tries_ahead_on_top_of_recorded_failures():
    inflight = InFlight(free=5)
    tickets = [inflight.begin("desk|eva") for _ in range(8)]
    allowed = []
    for t in tickets:
        try:
            t.check(failures=0, since_last_s=None)
            allowed.append(t)
        except TooManyFailures:
            t.end()
    assert len(allowed) == 5
    for t in allowed:
        t.end()
    with inflight.begin("desk|eva") as t, pytest.raises(TooManyFailures):
        t.check(failures=5, since_last_s=1.0)  # recorded failures (e.g. from before a restart) still count
    with inflight.begin("desk|eva") as t:
        t.check(failures=5, since_last_s=6.0)  # the 5 s have passed
    assert inflight.pending("desk|eva") == 0
