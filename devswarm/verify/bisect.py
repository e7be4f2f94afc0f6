"""Bisection with parallel probes: the first bad landing of a batch whose end is bad.

With `width` checks at once, each round probes `width` evenly spaced landings between the last
known green one and the first known bad one, so n landings take about log_(width+1)(n) rounds
instead of log_2(n). Results are the caller's (cached per commit), so a probe asked twice costs
nothing the second time.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor


def probes(lo: int, hi: int, width: int) -> list[int]:
    """Up to `width` indices strictly between lo and hi, evenly spaced."""
    k = max(1, min(width, hi - lo - 1))
    return sorted({lo + (i * (hi - lo)) // (k + 1) for i in range(1, k + 1)} - {lo, hi})


def first_bad(n: int, is_green: Callable[[int], bool], width: int = 2) -> tuple[int, int]:
    """(index of the first bad of items 0..n-1, probes run), given that what comes before item 0
    is green and item n-1 is bad. If a later item is green again (a fix landed after the
    break), the break before the first bad probe is the one found."""
    if n <= 0:
        raise ValueError("nothing to bisect")
    lo, hi, steps = -1, n - 1, 0
    with ThreadPoolExecutor(max(1, width), thread_name_prefix="bisect") as pool:
        while hi - lo > 1:
            points = probes(lo, hi, width)
            results = list(pool.map(is_green, points))
            steps += len(points)
            first_red = hi
            for point, green in zip(points, results, strict=True):
                if not green:
                    first_red = point
                    break
                lo = point
            hi = first_red
    return hi, steps
