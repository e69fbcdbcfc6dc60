"""Timing shared by the benchmarks: runtimes compared side by side in interleaved rounds,
so that a change of load on the machine (a shared VM) hits them alike.

Each runtime keeps its own defaults, spin-waiting worker threads included (TVM's pool,
onnxruntime's intra-op pool, torch's OpenMP): between parallel regions of one run they
save a wake-up per kernel, which is part of each runtime's speed. So that one runtime's
still-spinning threads do not take the cores from the next, each block of calls starts
after a pause and with one untimed call.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

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
