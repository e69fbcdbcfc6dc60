"""Two builds compared by paired calls: called back to back, in random order.

Why: on a shared few-core machine the load changes from one moment to the next, and a
comparison of two medians taken at different moments carries that change. Timing the
two builds in interleaved blocks (5 rounds of 4 calls each, 0.5 s apart) measured the
same function 0.62-1.39x against itself under load and two identical ShuffleNet builds
0.99-1.16x on a quiet machine; paired calls (each pair back to back, the order drawn at
random, the ratio taken per pair) gave identical builds 0.984-1.014 in 31 of 31
comparisons under load (2-vCPU Zen 3, 2026-12-07). The decision is then on the median
of the per-pair ratios.
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Callable, Sequence
from typing import TypeVar

First = TypeVar("First")
Second = TypeVar("Second")


def paired_calls(
    first: Callable[[], First], second: Callable[[], Second], pairs: int, rng: random.Random
) -> list[tuple[First, Second]]:
    """``pairs`` results of ``first()`` and ``second()`` called back to back, each pair
    in an order drawn from ``rng``."""
    results = []
    for _ in range(pairs):
        if rng.random() < 0.5:
            a = first()
            b = second()
        else:
            b = second()
            a = first()
        results.append((a, b))
    return results


def median_ratio(numerators: Sequence[float], denominators: Sequence[float]) -> float | None:
    """The median of ``numerators[i] / denominators[i]`` (two builds' times in the same
    pairs), or None without pairs. The sequences must be equally long: a sample without
    its partner has no ratio."""
    if len(numerators) != len(denominators):
        raise ValueError(f"{len(numerators)} times against {len(denominators)}: not paired")
    ratios = [n / d for n, d in zip(numerators, denominators, strict=True) if d > 0]
    return statistics.median(ratios) if ratios else None
