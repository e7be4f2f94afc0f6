"""Bisection with parallel probes finds the first bad landing."""

from __future__ import annotations

import threading

import pytest

from devswarm.verify.bisect import first_bad, probes


@pytest.mark.parametrize("n", [1, 2, 3, 7, 20, 64])
@pytest.mark.parametrize("width", [1, 2, 3])
def test_the_first_bad_item_is_found_at_every_position(n: int, width: int) -> None:
    for bad in range(n):
        asked: list[int] = []
        lock = threading.Lock()

        def green(i: int, bad: int = bad, asked: list[int] = asked, lock=lock) -> bool:
            with lock:
                asked.append(i)
            return i < bad

        found, steps = first_bad(n, green, width)
        assert found == bad
        assert steps == len(asked) and n - 1 not in asked  # the end is known bad
        assert len(set(asked)) == len(asked)  # no probe twice


def test_parallel_probes_take_fewer_rounds() -> None:
    rounds = {}
    for width in (1, 3):
        seen: list[int] = []
        first_bad(64, lambda i, seen=seen: seen.append(i) or i < 40, width)
        rounds[width] = len(seen) / width
    assert rounds[3] < rounds[1]


def test_a_later_fix_does_not_hide_the_first_break() -> None:
    # green before 5, red 5..9, green again 10..14, red from 15: the end (19) is red
    def green(i: int) -> bool:
        return i < 5 or 10 <= i < 15

    found, _ = first_bad(20, green, 1)
    assert found in (5, 15)  # a transition from green to red, never a green item
    assert not green(found) and (found == 0 or green(found - 1))


def test_probes_stay_strictly_inside() -> None:
    assert probes(-1, 1, 4) == [0]
    assert probes(-1, 9, 1) == [4]
    assert all(-1 < p < 9 for p in probes(-1, 9, 4))
