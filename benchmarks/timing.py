"""Timing shared by the benchmarks: runtimes compared side by side in interleaved rounds,
so that a change of load on the machine (a shared VM) hits them alike.

Each runtime keeps its own defaults, spin-waiting worker threads included (TVM's pool,
onnxruntime's intra-op pool, torch's OpenMP): between parallel regions of one run they
save a wake-up per kernel, which is part of each runtime's speed. So that one runtime's
still-spinning threads do not take the cores from the next, each block of calls starts
after a pause and with one untimed call.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable
from typing import Any

from optc.codegen.paired import median_ratio, paired_calls

ROUNDS = 5
SETTLE_S = 0.5  # longer than the runtimes' spin-wait after a run (TVM: ~0.1-0.3 s)


def interleaved_medians(runs: dict[str, Callable[[], Any]], repeat: int, warmup: int = 3,
                        rounds: int = ROUNDS) -> dict[str, float]:
    """Median seconds per call of each of ``runs``, timed in ``rounds`` interleaved rounds
    of ``repeat / rounds`` calls each (``repeat`` calls in all per variant)."""
    for run in runs.values():
        for _ in range(warmup):
            run()
    samples: dict[str, list[float]] = {name: [] for name in runs}
    per_round = max(1, -(-repeat // rounds))
    for _ in range(rounds):
        for name, run in runs.items():
            time.sleep(SETTLE_S)
            run()
            for _ in range(per_round):
                start = time.perf_counter()
                run()
                samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in samples.items()}


PAIRED_ROUNDS = 15
PAIRED_CALLS = 10


def paired_ratio(num: Callable[[], Any], den: Callable[[], Any],
                 rounds: int = PAIRED_ROUNDS, calls: int = PAIRED_CALLS,
                 seed: int = 0) -> float:
    """``num``'s time over ``den``'s, for two builds run by the same thread pool (two
    optc artifacts: every TVM library in a process shares one pool), as the median of
    per-pair ratios: each pair is the two called back to back, in random order, so both
    see the same load. Each round starts after ``SETTLE_S`` (another runtime's pool may
    still be spinning: a TVM call 10 ms after an onnxruntime run measured 5–7x slower)
    and one untimed call of each.

    Why not ``interleaved_medians``' ratio of medians: its 5 rounds of 4 calls per
    variant are ~5 load phases, taken >= 0.5 s apart; on this 2-vCPU VM the same
    function timed under two names that way came out 0.62–1.39x, and two identical
    ShuffleNet builds 0.99–1.16x on the quiet machine. Paired, 15 x 10: identical builds
    0.984–1.014 in 31 of 31 comparisons under load, and a model run twice against once
    2.001–2.010 (2026-12-07, a helper's experiments)."""
    rng = random.Random(seed)
    num_s: list[float] = []
    den_s: list[float] = []
    for _ in range(rounds):
        time.sleep(SETTLE_S)
        num()
        den()
        for took_num, took_den in paired_calls(_timed(num), _timed(den), calls, rng):
            num_s.append(took_num)
            den_s.append(took_den)
    ratio = median_ratio(num_s, den_s)
    assert ratio is not None  # rounds x calls >= 1 pairs
    return ratio


def _timed(run: Callable[[], Any]) -> Callable[[], float]:
    def timed() -> float:
        start = time.perf_counter()
        run()
        return time.perf_counter() - start

    return timed
