"""The tuner's last check: the kernel-level winners timed inside the whole model.

Why: MetaSchedule's runner times one kernel alone, run back to back with its inputs hot
in cache and the thread pool already awake, and the tuner's kernel-level ``_verify``
re-measures the same way. That does not predict the kernel's time inside the model,
where it follows other kernels (its weights and input arrive from further away, the
worker threads are woken once per kernel, other kernels left other data in cache), nor
the model's time: a winner can slow its neighbours. Measured on a 2-core Zen 3:
ShuffleNet tuned with 160 trials ran 1.43x slower than untuned although every kept
kernel had beaten its untuned schedule by >= 3 % alone; SqueezeNet tuned with 80 trials
(under load) had three winners alone (each >= 3 % faster), one of them 5 % slower in
the model. And whichever schedule wins depends on the load while it is measured (on a busy
machine a serial kernel beats a parallel one that waits for a preempted thread): a
decision is only as good as the conditions it was measured in, so the model is measured
as close to those of the kernels' decision as possible, in the same process, right after.

So the tuner builds the whole model twice, with the untuned schedules and with the
winners, and times both by paired calls (``optc.codegen.paired``: the two builds run
back to back in an order drawn at random, the ratio taken per pair, so that a change of
load hits both sides of every ratio), keeps a winner only where the median per-pair
ratio of its own kernel is ``KERNEL_MARGIN`` below 1, and keeps the result only where the
whole model's is ``MODEL_MARGIN`` below 1; otherwise every function gets its untuned
schedule. The decisions are pure functions of the measured times (``kept_in_context``,
``model_is_faster``) so that they can be tested on real measurements. (Until
2026-12-07 the decision compared medians of interleaved rounds, which measured two
identical ShuffleNet builds 0.64x apart in one benchmark run.)

Per-kernel times come from the Relax VM's instrument hook (``optc.codegen.kernel_clock``);
whole-model times from a second VM of the same executable without the hook.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import tvm
from tvm import relax
from tvm.s_tir import meta_schedule as ms

from optc.codegen.kernel_clock import KernelClock, per_kernel
from optc.codegen.paired import median_ratio, paired_calls

CONTEXT_ROUNDS = 10
"""Rounds of the in-context comparison, each after a pause and a warm-up run of both
builds (each: ``PROFILED_RUNS`` pairs of profiled runs, ``MODEL_RUNS`` pairs of
whole-model runs)."""

PROFILED_RUNS = 4
"""Pairs of profiled runs per round: a kernel's decision rests on ``CONTEXT_ROUNDS x
PROFILED_RUNS`` per-pair ratios."""

MODEL_RUNS = 6
"""Pairs of whole-model runs per round."""

KERNEL_MARGIN = 0.03
"""A winner's kernel must be this much faster inside the model (median per-pair ratio
below ``1 - KERNEL_MARGIN``) to be kept."""

MODEL_MARGIN = 0.02
"""The tuned model must be this much faster than untuned, else untuned is kept."""

SETTLE_S = 0.2
"""Pause before each round: the spinning worker threads of whatever ran before (TVM's
pool spins ~0.1 s after a parallel region) must not take the cores."""


@dataclass
class Timings:
    """One build's measurements, index by index paired with the other build's: per
    kernel (symbol) the seconds of each profiled run, all its call sites summed; and the
    whole model's seconds per run. Sample ``i`` of one build and sample ``i`` of the
    other were taken back to back."""

    kernels: dict[str, list[float]] = field(default_factory=dict)
    model: list[float] = field(default_factory=list)

    def kernel_median(self, name: str) -> float | None:
        values = self.kernels.get(name)
        return statistics.median(values) if values else None

    def model_median(self) -> float | None:
        return statistics.median(self.model) if self.model else None


def summed(timings: Timings, groups: Mapping[str, Iterable[str]]) -> Timings:
    """``timings`` with the kernels of each group (a tuned function applied to several
    kernels of the model) added up run by run, under the group's name."""
    kernels = {}
    for group, names in groups.items():
        rounds = [timings.kernels[n] for n in names if n in timings.kernels]
        if rounds:
            kernels[group] = [sum(values) for values in zip(*rounds, strict=True)]
    return Timings(kernels, list(timings.model))


def kernel_ratio(untuned: Timings, tuned: Timings, name: str) -> float | None:
    """Median per-pair ratio of kernel ``name``'s time, tuned over untuned; None where
    either build has no measurement of it."""
    before, after = untuned.kernels.get(name), tuned.kernels.get(name)
    if not before or not after:
        return None
    return median_ratio(after, before)


def kept_in_context(
    untuned: Timings, tuned: Timings, candidates: Iterable[str], margin: float = KERNEL_MARGIN
) -> set[str]:
    """The ``candidates`` (kernel names whose tuned build uses a search winner) whose
    median per-pair time ratio, tuned over untuned, is ``margin`` below 1. A kernel
    missing from either build's measurements is not kept: unmeasured, it cannot be
    shown to be faster."""
    kept = set()
    for name in candidates:
        ratio = kernel_ratio(untuned, tuned, name)
        if ratio is not None and ratio < 1 - margin:
            kept.add(name)
    return kept


def model_ratio(untuned: Timings, tuned: Timings) -> float | None:
    """Median per-pair ratio of the whole model's time, tuned over untuned."""
    if not untuned.model or not tuned.model:
        return None
    return median_ratio(tuned.model, untuned.model)


def model_is_faster(untuned: Timings, tuned: Timings, margin: float = MODEL_MARGIN) -> bool:
    """Whether the tuned model's median per-pair ratio to untuned is ``margin`` below 1."""
    ratio = model_ratio(untuned, tuned)
    return ratio is not None and ratio < 1 - margin


def build_with(
    mod: tvm.IRModule, target: tvm.target.Target, database: ms.Database
) -> relax.VMExecutable:
    """``mod`` (an imported Relax module) compiled as ``optc.codegen.build`` compiles it,
    with ``database``'s records applied before optc's rules."""
    from optc.codegen.relax_pipeline import relax_pipeline

    with database:
        return tvm.compile(mod, target=target, relax_pipeline=relax_pipeline(target))


def feeds_for(func: relax.Function, seed: int = 0) -> list[np.ndarray]:
    """Inputs for the Relax ``main``: floats standard normal, integers zero (a valid
    index for an embedding lookup). None of its parameters may have symbolic shapes."""
    rng = np.random.default_rng(seed)
    feeds = []
    for param in func.params:
        ty = param.ty
        shape = getattr(ty, "shape", None)
        dims = [] if shape is None else list(shape.values)
        if shape is None or not all(isinstance(d, (int, tvm.tirx.IntImm)) for d in dims):
            raise ValueError(f"input {param.name} is not a tensor of static shape")
        dtype = np.dtype(str(ty.dtype))
        static = tuple(int(d) for d in dims)
        if dtype.kind == "f":
            feeds.append(rng.standard_normal(static).astype(dtype))
        else:
            feeds.append(np.zeros(static, dtype))
    return feeds


class _Run:
    """One executable's two VMs (profiled and plain) and its inputs on the CPU."""

    def __init__(self, executable: relax.VMExecutable, feeds: list[np.ndarray]) -> None:
        device = tvm.cpu(0)
        self.args = [tvm.runtime.tensor(x, device) for x in feeds]
        self.plain = relax.VirtualMachine(executable, device)
        self.clock = KernelClock(executable, device)

    def kernels(self) -> dict[str, float]:
        """Seconds per kernel (call sites summed) of one profiled run."""
        return per_kernel(self.clock.run(self.args))

    def model(self) -> float:
        started = time.perf_counter()
        self.plain["main"](*self.args)
        return time.perf_counter() - started

    def warm(self) -> None:
        self.plain["main"](*self.args)
        self.clock.run(self.args)


def measure(
    executables: Mapping[str, relax.VMExecutable],
    feeds: list[np.ndarray],
    rounds: int = CONTEXT_ROUNDS,
    model_runs: int = MODEL_RUNS,
    profiled_runs: int = PROFILED_RUNS,
    seed: int = 0,
) -> dict[str, Timings]:
    """``Timings`` of two executables on ``feeds``, paired: in each of ``rounds`` rounds
    (after a pause and a warm-up run of both) ``profiled_runs`` pairs of profiled runs and
    ``model_runs`` pairs of whole-model runs, each pair back to back in random order.
    A kernel that one run of a pair did not call is left out of that pair."""
    if len(executables) != 2:
        raise ValueError(f"paired timing compares two builds, not {len(executables)}")
    (name_a, exe_a), (name_b, exe_b) = executables.items()
    a, b = _Run(exe_a, feeds), _Run(exe_b, feeds)
    found_a, found_b = Timings(), Timings()
    rng = random.Random(seed)
    for _ in range(rounds):
        time.sleep(SETTLE_S)
        a.warm()  # wakes the thread pool and brings each build's weights back to cache
        b.warm()
        for kernels_a, kernels_b in paired_calls(a.kernels, b.kernels, profiled_runs, rng):
            for symbol in kernels_a.keys() & kernels_b.keys():
                found_a.kernels.setdefault(symbol, []).append(kernels_a[symbol])
                found_b.kernels.setdefault(symbol, []).append(kernels_b[symbol])
        for model_a, model_b in paired_calls(a.model, b.model, model_runs, rng):
            found_a.model.append(model_a)
            found_b.model.append(model_b)
    return {name_a: found_a, name_b: found_b}
