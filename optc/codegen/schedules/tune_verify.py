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
winners, times both in interleaved rounds (each round in the other order, so that a
change of load or a warm cache favours neither), keeps a winner only where its own
kernel is ``KERNEL_MARGIN`` faster in the model, and keeps the result only where the
whole model is ``MODEL_MARGIN`` faster; otherwise every function gets its untuned
schedule. The decisions are pure functions of the measured times (``kept_in_context``,
``model_is_faster``) so that they can be tested on real measurements.

Per-kernel times come from the Relax VM's instrument hook (``perf_counter`` around each
kernel call, about a microsecond of overhead, the same in both builds); whole-model
times from a second VM of the same executable without the hook.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tvm
from tvm import relax
from tvm.s_tir import meta_schedule as ms

CONTEXT_ROUNDS = 7
"""Interleaved rounds of the in-context comparison (each: ``PROFILED_RUNS`` profiled
runs and ``MODEL_RUNS`` whole-model runs of each build)."""

PROFILED_RUNS = 3
"""Profiled runs per build and round. One run's kernel times are single samples: under
load, an unchanged kernel's median over 7 of them differed by 1.6x between two builds."""

MODEL_RUNS = 5
"""Whole-model runs per build and round."""

KERNEL_MARGIN = 0.03
"""A winner must make its kernel this much faster inside the model to be kept."""

MODEL_MARGIN = 0.02
"""The tuned model must be this much faster than untuned, else untuned is kept."""

SETTLE_S = 0.2
"""Pause before each build's block of runs: the other build's spinning worker threads
(TVM's pool spins ~0.1 s after a parallel region) must not take the cores."""

_BUILTIN = "vm.builtin."


@dataclass
class Timings:
    """One build's measurements: per kernel (symbol) the seconds of each profiled run,
    all its call sites summed; and the whole model's seconds per run."""

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


def kept_in_context(
    untuned: Timings, tuned: Timings, candidates: Iterable[str], margin: float = KERNEL_MARGIN
) -> set[str]:
    """The ``candidates`` (kernel names whose tuned build uses a search winner) whose
    median time in the tuned build is ``margin`` below their median in the untuned one.
    A kernel missing from either build's measurements is not kept: unmeasured, it
    cannot be shown to be faster."""
    kept = set()
    for name in candidates:
        before, after = untuned.kernel_median(name), tuned.kernel_median(name)
        if before is not None and after is not None and after < before * (1 - margin):
            kept.add(name)
    return kept


def model_is_faster(untuned: Timings, tuned: Timings, margin: float = MODEL_MARGIN) -> bool:
    """Whether the tuned model's median run is ``margin`` below the untuned one's."""
    before, after = untuned.model_median(), tuned.model_median()
    return before is not None and after is not None and after < before * (1 - margin)


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
        self.profiled = relax.VirtualMachine(executable, device)
        self.current: dict[str, float] = {}
        self._started: list[float] = []
        self.profiled.set_instrument(tvm.runtime.convert(self._instrument))

    def _instrument(self, _func: Any, symbol: str, before: bool, _ret: Any, *_args: Any) -> int:
        if symbol.startswith(_BUILTIN):
            return 0
        if before:
            self._started.append(time.perf_counter())
        else:
            elapsed = time.perf_counter() - self._started.pop()
            self.current[symbol] = self.current.get(symbol, 0.0) + elapsed
        return 0

    def kernels(self) -> dict[str, float]:
        """Seconds per kernel (call sites summed) of one profiled run."""
        self.current = {}
        self.profiled["main"](*self.args)
        return self.current

    def model(self) -> float:
        started = time.perf_counter()
        self.plain["main"](*self.args)
        return time.perf_counter() - started

    def warm(self) -> None:
        self.plain["main"](*self.args)
        self.profiled["main"](*self.args)


def measure(
    executables: Mapping[str, relax.VMExecutable],
    feeds: list[np.ndarray],
    rounds: int = CONTEXT_ROUNDS,
    model_runs: int = MODEL_RUNS,
    profiled_runs: int = PROFILED_RUNS,
) -> dict[str, Timings]:
    """``Timings`` of each executable on ``feeds``, in ``rounds`` interleaved rounds, the
    order of the builds reversed every other round: per kernel ``rounds x
    profiled_runs`` samples, per model ``rounds x model_runs``."""
    runs = {name: _Run(exe, feeds) for name, exe in executables.items()}
    for run in runs.values():
        run.warm()
    timings = {name: Timings() for name in runs}
    order = list(runs)
    for index in range(rounds):
        for name in order if index % 2 == 0 else reversed(order):
            run, found = runs[name], timings[name]
            time.sleep(SETTLE_S)
            run.warm()  # wakes the thread pool and brings this build's weights back to cache
            for _ in range(profiled_runs):
                for symbol, seconds in run.kernels().items():
                    found.kernels.setdefault(symbol, []).append(seconds)
            found.model.extend(run.model() for _ in range(model_runs))
    return timings
