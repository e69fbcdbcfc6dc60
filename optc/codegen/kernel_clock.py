"""Time each kernel call of a compiled model through the Relax VM's instrument hook.

The VM calls the hook before and after every packed function it invokes; optc's
kernels are the calls that are not the VM's own builtins (allocation, shape checks,
tuple handling). ``perf_counter`` around each kernel call costs about a microsecond, the
same in any two builds compared, so per-kernel figures of tiny kernels are upper bounds.

Used by the tuner's in-context check (``schedules/tune_verify.py``: a kernel's time
summed over its call sites, per run) and by ``benchmarks/profile_kernels.py`` (median
per call site over runs).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import tvm
from tvm import relax

BUILTIN_PREFIX = "vm.builtin."

CallSite = tuple[str, int]
"""A kernel's symbol and which of its calls in one run (0 for the first)."""


class KernelClock:
    """A Relax VM with the hook installed; ``run`` returns one run's seconds per call site.

    The hook is a method of this object, not a closure over module state: two clocks on
    two VMs of one process (the tuner's untuned and tuned builds) keep separate records."""

    def __init__(
        self, executable: relax.VMExecutable, device: tvm.runtime.Device, shapes: bool = False
    ) -> None:
        self.vm = relax.VirtualMachine(executable, device)
        self._started: list[float] = []
        self._calls: dict[str, int] = {}
        self._times: dict[CallSite, float] = {}
        self._record_shapes = shapes
        self.shapes: dict[CallSite, tuple[tuple[int, ...], ...]] = {}
        """With ``shapes``: each call site's argument shapes (inputs, then the outputs it
        writes: TVM's kernels take their destinations last), read after the call's clock
        stopped."""
        self.vm.set_instrument(tvm.runtime.convert(self._instrument))

    def _instrument(self, _func: Any, symbol: str, before: bool, _ret: Any, *args: Any) -> int:
        if symbol.startswith(BUILTIN_PREFIX):
            return 0
        if before:
            self._started.append(time.perf_counter())
            return 0
        elapsed = time.perf_counter() - self._started.pop()
        index = self._calls.get(symbol, 0)
        self._calls[symbol] = index + 1
        self._times[(symbol, index)] = elapsed
        if self._record_shapes and (symbol, index) not in self.shapes:  # same every run
            self.shapes[(symbol, index)] = tuple(
                tuple(int(d) for d in a.shape) for a in args if hasattr(a, "shape")
            )
        return 0

    def run(self, args: Sequence[Any]) -> dict[CallSite, float]:
        """One run of ``main`` on ``args``: seconds of every kernel call, by call site."""
        self._started.clear()
        self._calls = {}
        self._times = {}
        self.vm["main"](*args)
        return self._times


def per_kernel(sites: dict[CallSite, float]) -> dict[str, float]:
    """One run's call-site times summed per kernel symbol."""
    totals: dict[str, float] = {}
    for (symbol, _), seconds in sites.items():
        totals[symbol] = totals.get(symbol, 0.0) + seconds
    return totals
