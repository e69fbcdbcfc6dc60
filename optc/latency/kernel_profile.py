"""Per-kernel latencies of a graph: onnxruntime's profiler, TVM's VM instrument hook.

A whole-graph latency says how long a model took; a kernel profile says which of its
kernels took it. The ceiling study (``benchmarks/latency_ceiling.py``) uses these
finer labels to measure how much of the learned model's error comes from seeing only
whole-graph sums. Kernels are what really ran, not the graph as written: onnxruntime's
after its graph optimizations (``FusedConv``, ``QuickGelu``, ``SkipLayerNormalization``,
layout changes such as ``ReorderInput``), optc's TVM build's fused functions
(``fused_conv2d_add_relu``: ``optc.codegen.kernel_clock``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from optc.errors import UserInputError
from optc.ir import Graph
from optc.latency.runners import feeds_for, ort_options


@dataclasses.dataclass(frozen=True)
class KernelTime:
    """One kernel of a profiled run: onnxruntime's op, its tensor shapes, weight bytes
    and median seconds over the timed runs."""

    name: str
    op: str
    inputs: tuple[tuple[int, ...], ...]
    outputs: tuple[tuple[int, ...], ...]
    parameter_bytes: int
    seconds: float


@dataclasses.dataclass(frozen=True)
class KernelProfile:
    """A graph's kernels and the median of its whole runs, both under the profiler
    (which adds a little per kernel: compare runs with runs, not with plain timings)."""

    kernels: tuple[KernelTime, ...]
    run_s: float

    @property
    def kernel_sum_s(self) -> float:
        return sum(k.seconds for k in self.kernels)


def profile_onnxruntime(
    graph: Graph, threads: int = 1, runs: int = 40, warmup: int = 10
) -> KernelProfile:
    """Run ``graph`` ``warmup + runs`` times in an onnxruntime CPU session (``threads``
    intra-op threads, no spin-waiting, as the ``ort-*`` devices) with profiling on; the
    median of each kernel over the last ``runs``."""
    import onnxruntime as ort

    from optc.frontend import to_onnx

    _check_runs(runs, warmup)
    feeds = feeds_for(graph)
    with tempfile.TemporaryDirectory(prefix="optc-ort-profile-") as folder:
        options = ort_options(threads)
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(folder) / "profile")
        session = ort.InferenceSession(
            to_onnx(graph).SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
        for _ in range(warmup + runs):
            session.run(None, feeds)
        events = json.loads(Path(session.end_profiling()).read_text())
    return _profile(events, skip=warmup)


def profile_tvm(graph: Graph, threads: int = 1, runs: int = 40, warmup: int = 10) -> KernelProfile:
    """Build ``graph`` as ``optc compile`` does for this host and time each kernel call
    (``KernelClock``: about a microsecond of hook per call) over ``warmup + runs`` runs
    on ``threads`` TVM threads; the median of each call site over the last ``runs``.
    A kernel's ``op`` is its function's name without the numbering TVM gives variants;
    TVM does not say which arguments are weights, so ``parameter_bytes`` is 0."""
    import tvm

    from optc.codegen import build, host_target
    from optc.codegen.kernel_clock import KernelClock
    from optc.latency.runners import TvmBuilds, set_tvm_threads

    _check_runs(runs, warmup)
    TvmBuilds()  # TVM's pool settings, before the first module runs
    set_tvm_threads(threads)
    device = tvm.cpu(0)
    clock = KernelClock(build(graph, host_target()).executable, device, shapes=True)
    args = [tvm.runtime.tensor(np.ascontiguousarray(a), device) for a in feeds_for(graph).values()]
    sites: dict[tuple[str, int], list[float]] = defaultdict(list)
    totals = []
    for i in range(warmup + runs):
        started = time.perf_counter()
        times = clock.run(args)
        if i >= warmup:
            totals.append(time.perf_counter() - started)
            for site, seconds in times.items():
                sites[site].append(seconds)
    kernels = tuple(
        KernelTime(
            name=f"{symbol}#{index}",
            op=re.sub(r"\d+$", "", symbol),
            inputs=clock.shapes[(symbol, index)][:-1],
            outputs=clock.shapes[(symbol, index)][-1:],
            parameter_bytes=0,
            seconds=float(np.median(seconds)),
        )
        for (symbol, index), seconds in sites.items()
    )
    return KernelProfile(kernels, float(np.median(totals)))


def _profile(events: list[dict[str, Any]], skip: int) -> KernelProfile:
    """The kernels and runs of a profiler trace, the first ``skip`` runs dropped."""
    durations: dict[str, list[float]] = defaultdict(list)
    details: dict[str, dict[str, Any]] = {}
    runs = []
    for event in events:
        if event.get("cat") == "Session" and event.get("name") == "model_run":
            runs.append(event["dur"] * 1e-6)
        elif event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time"):
            name = event["name"].removesuffix("_kernel_time")
            durations[name].append(event["dur"] * 1e-6)
            details[name] = event.get("args", {})
    kernels = tuple(
        KernelTime(
            name=name,
            op=str(details[name].get("op_name", "")),
            inputs=_shapes(details[name].get("input_type_shape", [])),
            outputs=_shapes(details[name].get("output_type_shape", [])),
            parameter_bytes=int(details[name].get("parameter_size", 0) or 0),
            # Each kernel runs once per run, so its list lines up with the runs'.
            seconds=_median_after(times, skip),
        )
        for name, times in durations.items()
    )
    if not runs:
        raise UserInputError("the onnxruntime profile holds no model run")
    return KernelProfile(kernels, _median_after(runs, skip))


def _median_after(values: list[float], skip: int) -> float:
    """The median without the first ``skip`` values (all of them if that leaves none)."""
    return float(np.median(values[skip:] if len(values) > skip else values))


def _check_runs(runs: int, warmup: int) -> None:
    if runs < 1 or warmup < 0:
        raise UserInputError(f"profiling needs runs >= 1 and warmup >= 0, not {runs}, {warmup}")


def _shapes(typed: list[dict[str, list[int]]]) -> tuple[tuple[int, ...], ...]:
    """``[{"float": [1, 3, 224, 224]}, ...]`` -> ``((1, 3, 224, 224), ...)``."""
    return tuple(tuple(int(d) for d in next(iter(t.values()), [])) for t in typed)


def kernel_flops(kernel: KernelTime) -> float:
    """Multiply-adds x 2 for convolutions and matrix products, output elements for the
    rest: enough to tell a kernel's size, which is what the ceiling study needs."""
    out = math.prod(kernel.outputs[0]) if kernel.outputs and kernel.outputs[0] else 0
    op = kernel.op.lower()  # onnxruntime's ``FusedConv``, TVM's ``fused_conv2d_add``
    if len(kernel.inputs) > 1:
        weight = kernel.inputs[1]
        if "conv" in op and len(weight) >= 3:
            return 2.0 * out * math.prod(weight) / _output_channels(weight, kernel.outputs[0])
        if ("matmul" in op or "gemm" in op) and kernel.inputs[0]:
            return 2.0 * out * kernel.inputs[0][-1]
    return float(out)


def _output_channels(weight: tuple[int, ...], out: tuple[int, ...]) -> int:
    """The output-channel count a weight serves: its first axis in onnxruntime's OIHW
    (matching the NCHW output's channel axis), else the NHWC output's last axis (TVM's
    HWIO weights and its packed ``(O / o, H, W, I, o)`` ones)."""
    if len(out) > 1 and weight[0] == out[1]:
        return max(weight[0], 1)
    return max(out[-1], 1) if out else 1
