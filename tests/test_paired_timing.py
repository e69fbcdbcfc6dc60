"""``optc.codegen.paired`` and ``optc.codegen.kernel_clock``: the timing the tuner's
in-context check decides on, on the bundled digits CNN compiled for this host."""

from __future__ import annotations

import random
import time

import numpy as np
import pytest
import tvm
from test_compile_support import DIGITS

from optc.codegen import build
from optc.codegen.kernel_clock import KernelClock, per_kernel
from optc.codegen.paired import median_ratio, paired_calls
from optc.codegen.run import device_tensors
from optc.compiler.checking import check_feeds
from optc.frontend import load_onnx
from optc.target import get_target


def test_pairs_are_back_to_back_in_both_orders() -> None:
    log: list[str] = []

    def first() -> str:
        log.append("a")
        return "a"

    def second() -> str:
        log.append("b")
        return "b"

    results = paired_calls(first, second, 200, random.Random(0))
    assert results == [("a", "b")] * 200  # each result in its own slot, whatever the order
    pairs = ["".join(log[i : i + 2]) for i in range(0, len(log), 2)]
    assert set(pairs) == {"ab", "ba"}  # every pair is one call of each, adjacent
    assert 60 < pairs.count("ab") < 140  # the order is drawn, not fixed


def test_median_of_per_pair_ratios() -> None:
    # a load spike that hits both sides of a pair does not move its ratio
    slow, fast = [2.0, 20.0, 2.2, 2.0], [1.0, 10.0, 1.1, 4.0]
    assert median_ratio(slow, fast) == pytest.approx(2.0)
    assert median_ratio([], []) is None
    with pytest.raises(ValueError, match="not paired"):
        median_ratio([1.0], [1.0, 2.0])


def test_a_sleep_twice_as_long_measures_twice_as_long() -> None:
    def timed(seconds: float) -> float:
        start = time.perf_counter()
        time.sleep(seconds)
        return time.perf_counter() - start

    pairs = paired_calls(lambda: timed(0.004), lambda: timed(0.002), 15, random.Random(1))
    ratio = median_ratio([a for a, _ in pairs], [b for _, b in pairs])
    assert ratio is not None and 1.6 < ratio < 2.4


def test_kernel_clock_times_every_call_site_of_a_real_build() -> None:
    target = get_target("host")
    built = build(load_onnx(DIGITS), target.tvm_target_dict)
    device = tvm.cpu(0)
    args = device_tensors(built.inputs, check_feeds(built.inputs), device)
    clock = KernelClock(built.executable, device)
    first, second = clock.run(args), clock.run(args)
    assert first.keys() == second.keys()  # a run's record does not leak into the next
    assert all(seconds > 0 for seconds in first.values())
    assert not any(symbol.startswith("vm.builtin.") for symbol, _ in first)
    # call sites of one symbol are numbered 0, 1, ... within a run
    for symbol in {s for s, _ in first}:
        indices = sorted(i for s, i in first if s == symbol)
        assert indices == list(range(len(indices)))
    totals = per_kernel(first)
    assert sum(totals.values()) == pytest.approx(sum(first.values()))
    assert any("conv2d" in symbol for symbol in totals)
    # the hook does not change what the model computes
    plain = tvm.relax.VirtualMachine(built.executable, device)
    np.testing.assert_array_equal(plain["main"](*args).numpy(), clock.vm["main"](*args).numpy())
