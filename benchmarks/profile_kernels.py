"""Time every kernel of an optc-compiled model on this host and compare it with the fp32 peak.

    python benchmarks/profile_kernels.py resnet50 --top 15
    python benchmarks/profile_kernels.py examples/models/digits_cnn.onnx

The model (a name as in ``compile_vs_ort.py``, or an ONNX file) goes through the host
target's default pipeline and ``optc.codegen.build`` exactly as ``optc compile`` builds
it; the executable runs in a Relax VM whose instrument hook times each kernel call
(``perf_counter`` around it: about a microsecond of hook overhead per call, so the
shares of tiny kernels are upper bounds). Each call site's time is its median over
``--repeat`` runs; a kernel called at several sites sums them. Printed per kernel:
median time, share of the kernels' total, calls, GFLOP (multiply-adds x 2 of a
contraction, else TVM's estimate of the unscheduled function) and the GFLOP/s achieved
as a fraction of the calibrated fp32 peak (``optc targets --calibrate host``; that is a
measured matmul rate, not the FMA units' limit, so good kernels may exceed 100 %: give
``--peak GFLOPS`` to compare with another figure).

On a shared machine, ``TVM_NUM_THREADS=1`` gives steadier per-kernel figures (a kernel
split over two threads waits for the slower one); they rank kernels by efficiency, not
by their share of a two-thread run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tvm
from tvm import tirx

from optc.codegen import build
from optc.codegen.kernel_clock import KernelClock
from optc.codegen.relax_pipeline import cpu_schedule
from optc.codegen.run import device_tensors
from optc.compiler.api import optimize
from optc.compiler.checking import check_feeds
from optc.frontend import load_onnx
from optc.pipeline import parse_pipeline
from optc.target import get_target


@dataclass(frozen=True)
class KernelTime:
    """One kernel's median time per inference and its work."""

    name: str
    seconds: float
    calls: int
    flops: float | None

    def gflops(self) -> float | None:
        return None if self.flops is None or self.seconds <= 0 else self.flops / self.seconds / 1e9


def kernel_flops(func: tirx.PrimFunc) -> float | None:
    """FLOPs of one unscheduled kernel: 2 x multiply-adds for a contraction, else TVM's
    estimate (None where TVM cannot estimate it)."""
    from optc.codegen.schedules.space import contraction_macs

    macs = contraction_macs(func)
    if macs is not None:
        return 2.0 * macs
    try:
        from tvm.s_tir.analysis import estimate_tir_flops

        return float(estimate_tir_flops(tvm.IRModule({"main": func})))
    except (RuntimeError, ValueError, TypeError):
        return None


def _times(flops: float | None, calls: int) -> float | None:
    return None if flops is None else flops * calls


def recording_schedule(
    seen: dict[str, tirx.PrimFunc],
) -> Callable[[tvm.IRModule, tvm.target.Target], tvm.IRModule]:
    """optc's CPU schedule hook that first keeps every unscheduled PrimFunc in ``seen``."""

    def hook(mod: tvm.IRModule, target: tvm.target.Target) -> tvm.IRModule:
        for gvar, func in mod.functions_items():
            if isinstance(func, tirx.PrimFunc):
                seen[gvar.name_hint] = func
        return cpu_schedule(mod, target)

    return hook


def time_kernels(
    clock: KernelClock, args: list[Any], repeat: int
) -> dict[str, tuple[float, int]]:
    """``name -> (median seconds per inference, calls per inference)`` over ``repeat`` runs."""
    clock.run(args)  # the first run warms caches and allocators
    runs = [clock.run(args) for _ in range(repeat)]
    medians: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    for site in runs[0]:
        medians[site[0]] += statistics.median(run[site] for run in runs)
        counts[site[0]] += 1
    return {name: (medians[name], counts[name]) for name in medians}


def profile(
    model_path: Path, feeds: Mapping[str, np.ndarray] | None, repeat: int
) -> tuple[list[KernelTime], float]:
    """Per-kernel times of ``model_path`` built for ``host``, slowest first, and the fp32
    peak. ``feeds`` None: the deterministic feeds ``optc compile`` checks with."""
    target = get_target("host")
    graph = optimize(load_onnx(model_path), parse_pipeline(target.default_pipeline)).graph
    seen: dict[str, tirx.PrimFunc] = {}
    # fuse=True: as optc builds with its own schedules (a custom hook turns it off).
    built = build(graph, target.tvm_target_dict, schedule=recording_schedule(seen), fuse=True)
    device = tvm.cpu(0)
    clock = KernelClock(built.executable, device)
    if feeds is None:
        feeds = check_feeds(built.inputs)
    args = device_tensors(built.inputs, feeds, device)
    times = time_kernels(clock, args, repeat)
    kernels = [
        KernelTime(
            name, seconds, calls, _times(kernel_flops(seen[name]), calls) if name in seen else None
        )
        for name, (seconds, calls) in times.items()
    ]
    kernels.sort(key=lambda k: k.seconds, reverse=True)
    return kernels, target.peak("float32")


def print_table(kernels: list[KernelTime], peak: float, top: int) -> None:
    """The ``top`` kernels, then the totals; ``peak`` in FLOP/s."""
    total = sum(k.seconds for k in kernels)
    print(f"{'kernel':<52}{'ms':>8}{'share':>7}{'calls':>6}{'GFLOP':>8}{'GFLOP/s':>9}{'%peak':>7}")
    for k in kernels[:top]:
        rate = k.gflops()
        gflop = f"{k.flops / 1e9:8.3f}" if k.flops is not None else f"{'?':>8}"
        rate_s = f"{rate:9.1f}{100 * rate * 1e9 / peak:7.0f}" if rate else f"{'?':>9}{'':>7}"
        row = f"{k.seconds * 1e3:8.3f}{k.seconds / total:7.1%}{k.calls:6d}{gflop}{rate_s}"
        print(f"{k.name[:51]:<52}{row}")
    flops = sum(k.flops or 0.0 for k in kernels)
    print(
        f"{len(kernels)} kernels, {total * 1e3:.2f} ms in all, {flops / 1e9:.2f} GFLOP, "
        f"{flops / total / 1e9:.1f} GFLOP/s (fp32 peak {peak / 1e9:.1f})"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a model name as in compile_vs_ort.py, or an ONNX file")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--peak", type=float, help="fp32 GFLOP/s for the %%peak column")
    args = parser.parse_args(argv)
    from compile_vs_ort import ALL_MODELS, prepare

    with tempfile.TemporaryDirectory(prefix="optc-profile-") as tmp:
        if args.model in ALL_MODELS:
            path, feeds, _ = prepare(args.model, Path(tmp))
        else:
            path, feeds = Path(args.model), None
        kernels, peak = profile(path, feeds, args.repeat)
    print_table(kernels, args.peak * 1e9 if args.peak else peak, args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
