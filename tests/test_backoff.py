"""shared.backoff: doubling to a cap, bounded jitter, reset, repeatable with a given random source."""
from __future__ import annotations

import random

import pytest

from shared.backoff import Backoff


def test_doubles_to_its_cap_and_reset_starts_again() -> None:
    b = Backoff(0.5, 10.0)
    assert [b.next_delay() for _ in range(7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert b.failures == 7
    b.reset()
    assert b.failures == 0 and b.next_delay() == 0.5 and b.failures == 1


def test_jitter_is_bounded_around_the_base_delay() -> None:
    b = Backoff(0.5, 10.0, jitter=0.2)
    delays = [b.next_delay() for _ in range(200)][6:]  # past the doubling: base 10 s
    assert all(8.0 <= d <= 12.0 for d in delays) and len(set(delays)) > 1


def test_a_given_random_source_makes_the_delays_repeatable() -> None:
    def run(seed: int) -> list[float]:
        b = Backoff(1.0, 60.0, jitter=0.2, rng=random.Random(seed).random)
        return [b.next_delay() for _ in range(10)]

    assert run(7) == run(7) and run(7) != run(8)
    low = Backoff(1.0, 60.0, jitter=0.2, rng=lambda: 0.0)
    high = Backoff(1.0, 60.0, jitter=0.2, rng=lambda: 0.999999)
    assert [low.next_delay() for _ in range(3)] == pytest.approx([0.8, 1.6, 3.2])
    assert [high.next_delay() for _ in range(8)][-1] == pytest.approx(72.0, rel=1e-5)  # 60 s cap, +20 %


def test_thousands_of_failures_stay_at_the_cap() -> None:
    """2 ** n on an int would overflow a float after ~1024 failures (17 h of a dead sink at 60 s)."""
    b = Backoff(1.0, 60.0, jitter=0.2, rng=lambda: 0.5)
    for _ in range(5000):
        delay = b.next_delay()
    assert delay == pytest.approx(60.0) and b.failures == 5000


@pytest.mark.parametrize("initial, cap, jitter", [(0, 1, 0), (2, 1, 0), (-1, 1, 0), (1, 2, 1.0), (1, 2, -0.1)])
def test_bad_numbers_are_refused_with_a_sentence(initial: float, cap: float, jitter: float) -> None:
    with pytest.raises(ValueError, match="back-off"):
        Backoff(initial, cap, jitter)
