"""The host CPU micro-benchmark: achievable peak rates per dtype, memory and cache
bandwidth, and the fixed cost of one operator call.

Rates are what well-tuned kernels reach on this machine, not datasheet peaks: a large
matmul, the faster of torch's BLAS / oneDNN and onnxruntime's MLAS (float32: torch's
BLAS ran 2.5x below MLAS on a Zen 5 with AVX-512; int8: ``torch._int_mm`` against
``MatMulInteger``, because torch has a fast int8 CPU kernel only where the CPU has VNNI,
while MLAS has one for plain AVX2 too), a STREAM triad
``a = b + s * c`` on arrays several times the last-level cache (LLC) and on arrays that
fit in it. Each figure is the median of several timed repeats after warm-up runs, with
torch pinned to the cores optc may use. A full run takes a few seconds; ``quick``
shrinks every problem for tests.
"""

from __future__ import annotations

import dataclasses
import logging
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from optc.errors import OptcError

log = logging.getLogger(__name__)

CACHE_SYSFS = Path("/sys/devices/system/cpu/cpu0/cache")
_MIN_SAMPLE_BYTES = 256 * 2**20
"""Bytes one timed stream sample moves at least (cache-resident arrays are swept again)."""
ASSUMED_LLC_BYTES = 8 * 2**20
"""LLC size assumed where sysfs does not say (most desktop and server CPUs have more)."""

# CPU flags (x86 /proc/cpuinfo names, Arm "Features" names) that mean native units.
_NATIVE_FLAGS = {
    "bfloat16": ("avx512_bf16", "amx_bf16", "bf16"),
    "float16": ("avx512_fp16", "amx_fp16", "asimdhp"),
}


@dataclasses.dataclass(frozen=True)
class BenchSizes:
    """Problem sizes: matmul edge, LLC multiples of the stream arrays, repeats."""

    matmul_n: int
    stream_llc_multiple: float
    repeats: int
    warmups: int
    launch_calls: int


FULL = BenchSizes(matmul_n=2048, stream_llc_multiple=4.0, repeats=7, warmups=2,
                  launch_calls=3000)
QUICK = BenchSizes(matmul_n=384, stream_llc_multiple=1.5, repeats=3, warmups=1,
                   launch_calls=300)


PROBE_N = 256
"""Edge of the small int8 matmul that decides whether torch's int8 kernel is worth timing."""
SLOW_PROBE_FACTOR = 4.0
"""torch's int8 probe must reach this fraction (1/4) of onnxruntime's rate to be timed."""


class CalibrationError(OptcError):
    """The micro-benchmark could not measure a figure (internal: exit code 1)."""


def measure_host(threads: int, cpu_flags: frozenset[str], quick: bool = False,
                 ) -> tuple[dict[str, float], dict[str, Any]]:
    """``(figures, details)``: figures keyed like ``Target.pending_figures()``."""
    sizes = QUICK if quick else FULL
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _measure(sizes, cpu_flags, threads)
    finally:
        torch.set_num_threads(previous)


def _measure(sizes: BenchSizes, flags: frozenset[str], threads: int,
             ) -> tuple[dict[str, float], dict]:
    figures: dict[str, float] = {}
    details: dict[str, Any] = {"sizes": dataclasses.asdict(sizes)}
    figures["peak_flops.float32"], details["matmul.float32"] = float32_matmul_rate(sizes, threads)
    for dtype in native_extra_dtypes(flags):
        figures[f"peak_flops.{dtype}"], details[f"matmul.{dtype}"] = matmul_rate(dtype, sizes)
    figures["peak_flops.int8"], details["matmul.int8"] = int8_matmul_rate(sizes, threads)
    llc = llc_bytes()
    figures["memory_bandwidth"], details["stream"] = stream_rate(
        int(llc * sizes.stream_llc_multiple), sizes)
    # A quarter of the LLC for all three arrays: they stay cached between repeats.
    figures["cache_bandwidth"], details["cache_stream"] = stream_rate(llc // 4, sizes)
    if figures["cache_bandwidth"] < figures["memory_bandwidth"]:
        # Only a disturbed run (other processes on these cores) measures a cache slower
        # than DRAM; the model must not believe it.
        log.warning("cache bandwidth measured below memory bandwidth (a busy machine?); "
                    "using the memory bandwidth for both")
        figures["cache_bandwidth"] = figures["memory_bandwidth"]
    figures["cache_size"] = float(llc)
    figures["launch_overhead"], details["call"] = call_overhead(sizes)
    return figures, details


def native_extra_dtypes(flags: frozenset[str]) -> list[str]:
    """Reduced-precision float dtypes the CPU has arithmetic units for."""
    return [dtype for dtype, names in _NATIVE_FLAGS.items() if flags & set(names)]


def timed(fn: Callable[[], object], sizes: BenchSizes) -> list[float]:
    """Seconds of each of ``sizes.repeats`` calls of ``fn``, after the warm-up calls."""
    for _ in range(sizes.warmups):
        fn()
    times = []
    for _ in range(sizes.repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def _summary(work: float, times: list[float], per_call: int = 1) -> tuple[float, dict]:
    """``(work / median time, details)``; the best rate is kept in the details too."""
    median = statistics.median(times) / per_call
    return work / median, {"median_s": median, "best_s": min(times) / per_call,
                           "best_rate": work * per_call / min(times)}


def matmul_rate(dtype: str, sizes: BenchSizes) -> tuple[float, dict]:
    """Operations per second of an ``n x n x n`` matmul in ``dtype`` (2 ops per MAC)."""
    n = sizes.matmul_n
    gen = torch.Generator().manual_seed(0)
    if dtype == "int8":
        a = torch.randint(-128, 128, (n, n), dtype=torch.int8, generator=gen)
        b = torch.randint(-128, 128, (n, n), dtype=torch.int8, generator=gen)
        fn: Callable[[], object] = lambda: torch._int_mm(a, b)  # noqa: E731 - int8 x int8 -> int32
    else:
        torch_dtype = getattr(torch, dtype)
        a = torch.randn(n, n, generator=gen).to(torch_dtype)
        b = torch.randn(n, n, generator=gen).to(torch_dtype)
        fn = lambda: torch.matmul(a, b)  # noqa: E731
    try:
        times = timed(fn, sizes)
    except RuntimeError as exc:  # e.g. a torch build without an int8 CPU kernel
        raise CalibrationError(f"cannot time a {dtype} matmul on this CPU: {exc}") from exc
    return _summary(2.0 * n**3, times)


def float32_matmul_rate(sizes: BenchSizes, threads: int) -> tuple[float, dict]:
    """The faster of torch's and onnxruntime's float32 matmul.

    torch's CPU BLAS is not the fastest kernel on every x86 CPU (on a Zen 5 VM it ran
    at ~40 % of MLAS's AVX-512 rate, and optc's own convolutions beat it), and the
    roofline's compute bound must not sit below what generated code reaches."""
    rates = {"torch": matmul_rate("float32", sizes)}
    try:
        rates["onnxruntime"] = _ort_matmul_rate("float32", sizes, threads)
    except CalibrationError as exc:
        log.warning("%s", exc)
    return _fastest(rates)


def _fastest(rates: dict[str, tuple[float, dict]]) -> tuple[float, dict]:
    best = max(rates, key=lambda name: rates[name][0])
    details = {name: detail for name, (_rate, detail) in rates.items()}
    return rates[best][0], {**details, "source": best}


def int8_matmul_rate(sizes: BenchSizes, threads: int) -> tuple[float, dict]:
    """The faster of torch's and onnxruntime's int8 matmul (int32 accumulation).

    ``torch._int_mm`` is oneDNN's VNNI kernel where the CPU has VNNI and a slow generic
    loop elsewhere (0.2 GOP/s on an AVX2-only Zen 3, 100x below its fp32 rate); MLAS's
    ``MatMulInteger`` uses ``vpmaddubsw``/``vpmaddwd`` on AVX2. Either is a kernel a
    code generator can match, so the faster is this CPU's int8 rate.
    """
    rates: dict[str, tuple[float, dict]] = {}
    try:
        rates["onnxruntime"] = _ort_matmul_rate("int8", sizes, threads)
    except CalibrationError as exc:
        log.warning("%s", exc)
    # Probe torch on a small problem first: its generic loop would take minutes on the
    # full-size matmul, and a kernel that slow on a small one is not the fast one.
    probe = dataclasses.replace(sizes, matmul_n=min(sizes.matmul_n, PROBE_N), repeats=1,
                                warmups=1)
    try:
        rate, detail = matmul_rate("int8", probe)
        best_other = max((r for r, _ in rates.values()), default=0.0)
        if rate * SLOW_PROBE_FACTOR >= best_other:
            rate, detail = matmul_rate("int8", sizes)
        else:
            detail = {**detail, "probe_only": True}
        rates["torch"] = (rate, detail)
    except CalibrationError as exc:
        log.warning("%s", exc)
    if not rates:
        raise CalibrationError("cannot time an int8 matmul on this CPU (torch, onnxruntime)")
    return _fastest(rates)


def _ort_matmul_rate(dtype: str, sizes: BenchSizes, threads: int) -> tuple[float, dict]:
    """Operations per second of onnxruntime's float32 ``MatMul`` or u8 x s8 -> i32
    ``MatMulInteger`` (``dtype`` "int8")."""
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper

    n = sizes.matmul_n
    rng = np.random.default_rng(0)
    if dtype == "int8":
        op, types = "MatMulInteger", (TensorProto.UINT8, TensorProto.INT8, TensorProto.INT32)
        feeds = {"a": rng.integers(0, 256, (n, n), dtype=np.uint8),
                 "b": rng.integers(-128, 128, (n, n), dtype=np.int8)}
    else:
        op, types = "MatMul", (TensorProto.FLOAT,) * 3
        feeds = {"a": rng.standard_normal((n, n), dtype=np.float32),
                 "b": rng.standard_normal((n, n), dtype=np.float32)}
    graph = helper.make_graph(
        [helper.make_node(op, ["a", "b"], ["y"])], f"{dtype}_matmul",
        [helper.make_tensor_value_info("a", types[0], [n, n]),
         helper.make_tensor_value_info("b", types[1], [n, n])],
        [helper.make_tensor_value_info("y", types[2], [n, n])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    try:
        session = ort.InferenceSession(model.SerializeToString(),
                                       options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        raise CalibrationError(f"onnxruntime cannot build a {dtype} matmul: {exc}") from exc
    return _summary(2.0 * n**3, timed(lambda: session.run(None, feeds), sizes))


def stream_rate(total_bytes: int, sizes: BenchSizes) -> tuple[float, dict]:
    """Triad bytes/s on three float32 arrays of ``total_bytes`` in all (2 reads + 1 write).

    Small (cache-resident) arrays are swept several times per timed sample so that a
    sample lasts long enough to time.
    """
    count = max(total_bytes // 12, 1024)
    inner = max(1, _MIN_SAMPLE_BYTES // (12 * count))
    a, b, c = (torch.full((count,), float(i + 1)) for i in range(3))

    def triad() -> None:
        for _ in range(inner):
            torch.add(b, c, alpha=3.0, out=a)

    rate, details = _summary(12.0 * count, timed(triad, sizes), per_call=inner)
    return rate, {**details, "array_bytes": 4 * count, "sweeps_per_sample": inner}


def call_overhead(sizes: BenchSizes) -> tuple[float, dict]:
    """Seconds of one operator call on one-element tensors: dispatch cost, no work."""
    x, y, out = torch.ones(1), torch.ones(1), torch.empty(1)

    def calls() -> None:
        for _ in range(sizes.launch_calls):
            torch.add(x, y, out=out)

    times = timed(calls, sizes)
    median = statistics.median(times) / sizes.launch_calls
    return median, {"median_s": median, "best_s": min(times) / sizes.launch_calls}


def llc_bytes(sysfs: Path = CACHE_SYSFS) -> int:
    """Size of the highest cache level sysfs reports for CPU 0; an assumption otherwise."""
    best: tuple[int, int] | None = None
    for index in sorted(sysfs.glob("index*")):
        try:
            level = int((index / "level").read_text())
            kind = (index / "type").read_text().strip()
            size = _parse_size((index / "size").read_text().strip())
        except (OSError, ValueError):
            continue
        if kind != "Instruction" and (best is None or level > best[0]):
            best = (level, size)
    if best is None:
        log.warning("cache size unknown (no %s); assuming %d MiB", sysfs, ASSUMED_LLC_BYTES >> 20)
        return ASSUMED_LLC_BYTES
    return best[1]


def _parse_size(text: str) -> int:
    units = {"K": 2**10, "M": 2**20, "G": 2**30}
    if text and text[-1].upper() in units:
        return int(text[:-1]) * units[text[-1].upper()]
    return int(text)
