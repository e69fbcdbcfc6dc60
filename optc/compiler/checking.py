"""The output check: the compiled model against optc's reference interpreter.

Both run on the same deterministic feeds; float inputs are seeded standard-normal
samples (signed, so that both sides of every ReLU are exercised), other inputs zeros
(a valid index and an all-off mask in any model).

Tolerance, per float output: ``|compiled - reference| <= atol + rtol * |reference|``
with ``rtol = 1e-3`` and ``atol = 1e-4 * max |reference|``. TVM reorders float32
reductions (tiling, vectorization) and may use polynomial ``exp``/``erf`` (relative
error below 3e-7): each element then carries rounding of order ``sqrt(K) * 6e-8``
times the magnitude of the ``K`` terms summed into it, which for the K of real
layers (up to ~10^4) and a few dozen layers stays well under 1e-4 of the output's
range. An element that is a near-zero difference of large terms has no meaningful
relative accuracy, hence the absolute part scaled by the output's own magnitude (the
check does not depend on the model's units). A real miscompilation (a wrong index, a
dropped bias, a bad schedule) moves outputs by whole percent or more. Integer and
bool outputs must be equal.

Graphs with low-precision compute (float16 or bfloat16 values, or QuantizeLinear: int8
codes) get a wider tolerance, ``LOW_PRECISION``: float16 rounds at ~5e-4 relative per
operation and TVM's fp16 kernels accumulate in another order than the interpreter, and
int8 requantization may round a value to the neighbouring code (one quantization step)
where the two sides compute the scale division differently. Their task accuracy is what
the budget search measures on the compiled model; this check still catches
miscompilations, which move outputs by much more.

bfloat16 rounds 8x coarser than float16 (~4e-3 relative per operation), and the same
tolerance still holds it with a wide margin, because both sides round the same float32
results: a kernel that sums in float32 and rounds once to bfloat16 (``vdpbf16ps``)
differs from the interpreter only where the float32 sums, in another order, round
across a tie. Measured (2026-12-07) between the interpreter and float32 emulations of
such kernels on the all-bfloat16 models (every Conv / Gemm / MatMul): rounding once,
rounding the product before adding the bias, or not rounding the output at all, the
largest difference was 0.5 % of the output's magnitude on the digits CNN and 0.25 % on
MiniLM-L6 (a real sentence and the check's feeds), against the 3 % ``atol_scale`` (float16:
0.06 % and 0.03 %). So it is not widened for bfloat16.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from optc.errors import OptcError
from optc.ir.graph import Graph

log = logging.getLogger(__name__)

RTOL = 1e-3
ATOL_SCALE = 1e-4
LOW_PRECISION_DTYPES = frozenset({"float16", "bfloat16"})
QUANTIZED_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"})


@dataclasses.dataclass(frozen=True)
class Tolerance:
    """``|compiled - reference| <= atol_scale * max|reference| + rtol * |reference|``."""

    rtol: float = RTOL
    atol_scale: float = ATOL_SCALE
    why: str = "float32 compute"


FLOAT32 = Tolerance()
LOW_PRECISION = Tolerance(2e-2, 3e-2,
                          "low-precision compute (float16, bfloat16 or int8 values)")


def tolerance_for(graph: Graph) -> Tolerance:
    """``LOW_PRECISION`` when the graph computes in float16 / bfloat16 or (de)quantizes to
    int codes."""
    dtypes = {v.dtype for node in graph.nodes for v in node.outputs}
    low = dtypes & LOW_PRECISION_DTYPES or any(n.op in QUANTIZED_OPS for n in graph.nodes)
    return LOW_PRECISION if low else FLOAT32
SEED = 0
FEEDS = f"seeded standard-normal floats (numpy default_rng({SEED})), zeros for other dtypes"


class OutputMismatchError(OptcError):
    """The compiled model disagrees with the reference interpreter: a bug in optc or TVM
    (exit code 1), never the user's model."""


@dataclasses.dataclass(frozen=True)
class OutputError:
    """How far one compiled output is from the reference."""

    name: str
    max_abs_error: float
    atol: float
    worst_excess: float
    """max of ``|error| - (atol + rtol * |reference|)``; > 0 means out of tolerance."""

    @property
    def ok(self) -> bool:
        return self.worst_excess <= 0

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "max_abs_error": self.max_abs_error, "atol": self.atol,
                "within_tolerance": self.ok}


def check_feeds(inputs: Sequence[Any]) -> dict[str, np.ndarray]:
    """Deterministic feeds for ``inputs`` (``TensorSpec``s with static shapes)."""
    rng = np.random.default_rng(SEED)
    feeds = {}
    for spec in inputs:
        shape = tuple(int(d) for d in spec.shape or ())
        dtype = np.dtype(spec.dtype)
        if dtype.kind == "f":
            feeds[spec.name] = rng.standard_normal(shape).astype(dtype)
        else:
            feeds[spec.name] = np.zeros(shape, dtype)
    return feeds


def reference_outputs(graph: Graph, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    from optc.interp import run_numpy  # deferred: imports torch

    return run_numpy(graph, feeds)


def compare(reference: Mapping[str, np.ndarray], compiled: Mapping[str, np.ndarray],
            tolerance: Tolerance = FLOAT32) -> list[OutputError]:
    """Per output errors; differing output names or shapes are mismatches at once."""
    if set(reference) != set(compiled):
        raise OutputMismatchError(f"the compiled model returns outputs {sorted(compiled)}, "
                                  f"the reference {sorted(reference)} (a bug in optc or TVM)")
    return [_compare_one(name, np.asarray(want), np.asarray(compiled[name]), tolerance)
            for name, want in reference.items()]


def _compare_one(name: str, want: np.ndarray, got: np.ndarray,
                 tolerance: Tolerance) -> OutputError:
    if want.shape != got.shape:
        raise OutputMismatchError(f"compiled output {name!r} has shape {list(got.shape)}, the "
                                  f"reference {list(want.shape)} (a bug in optc or TVM)")
    if want.size == 0:
        return OutputError(name, 0.0, 0.0, 0.0)
    want64, got64 = want.astype(np.float64), got.astype(np.float64)
    if want.dtype.kind != "f":  # integers and bools: exactly equal
        largest = float(np.max(np.abs(got64 - want64)))
        return OutputError(name, largest, 0.0, largest)
    finite = np.isfinite(want64)
    # A non-finite reference element must be reproduced exactly (inf as inf, nan as nan);
    # a NaN the reference does not have is an infinite error.
    same = (want64 == got64) | (np.isnan(want64) & np.isnan(got64))
    with np.errstate(invalid="ignore"):  # inf - inf where the reference is not finite
        error = np.where(finite, np.abs(got64 - want64), np.where(same, 0.0, np.inf))
    error = np.where(np.isnan(error), np.inf, error)
    atol = tolerance.atol_scale * (float(np.max(np.abs(want64[finite]))) if finite.any()
                                   else 0.0)
    excess = error - (atol + tolerance.rtol * np.abs(np.where(finite, want64, 0.0)))
    return OutputError(name, float(np.max(error)), atol, float(np.max(excess)))


def check_outputs(graph: Graph, feeds: Mapping[str, np.ndarray],
                  compiled: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """The check record for the report; ``OutputMismatchError`` when out of tolerance."""
    tolerance = tolerance_for(graph)
    errors = compare(reference_outputs(graph, feeds), compiled, tolerance)
    bad = [e for e in errors if not e.ok]
    if bad:
        worst = bad[0]
        raise OutputMismatchError(
            f"the compiled model disagrees with the reference interpreter on output "
            f"{worst.name!r} (max abs error {worst.max_abs_error:.3g}, allowed "
            f"{worst.atol:.3g} + {tolerance.rtol:g} x |reference|, {tolerance.why}); nothing "
            f"was written. This is a bug in optc or TVM: please report it")
    log.info("output check passed: %s", ", ".join(
        f"{e.name} max abs error {e.max_abs_error:.3g}" for e in errors))
    return {"status": "passed", "reference": "optc.interp (reference interpreter)",
            "feeds": FEEDS, "rtol": tolerance.rtol, "atol_scale": tolerance.atol_scale,
            "tolerance_for": tolerance.why,
            "outputs": [e.to_json() for e in errors]}


def skipped(reason: str) -> dict[str, Any]:
    return {"status": "skipped", "reason": reason}
