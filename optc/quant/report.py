"""What the mixed-precision pass decided and measured, as JSON-ready records.

The pass stores ``Report.to_json()`` in the output graph's metadata under
``REPORT_KEY`` (ONNX ``metadata_props`` carry it into saved models), and the Python API
(``optc.quant.quantize_mixed``) returns the ``Report`` itself.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from optc.ir.graph import Graph
from optc.quant.layers import Layer
from optc.quant.numerics import FP32, LayerPrecision, code_label
from optc.quant.search import SearchResult, Trial

REPORT_KEY = "optc.mixed_precision"


@dataclasses.dataclass(frozen=True)
class LayerReport:
    """One layer: its precision, sensitivity figures and weight storage."""

    key: str
    node: str
    op: str
    precision: str
    weight_bits: int
    act_bits: int
    hessian_trace: float | None  # None when every step fit without an order
    scores: Mapping[str, Mapping[str, float]]  # step label -> hessian / interaction / score
    weight_elements: int
    weight_bytes_fp32: int
    weight_bytes_packed: float  # at weight_bits per element (4-bit codes travel as int8)


@dataclasses.dataclass(frozen=True)
class Report:
    """The search's outcome; ``drop`` is measured on the calibration samples."""

    metric: str
    max_drop: float
    calibration: str
    synthetic_calibration: bool
    samples: int
    baseline_score: float
    score: float
    drop: float
    latency_model: str
    latency_fp32_s: float
    latency_s: float
    param_bytes_before: int
    param_bytes_after: int
    dependencies: bool
    fidelity: Mapping[str, float]  # agreement / cosine / kl against fp32, calibration set
    layers: tuple[LayerReport, ...]
    trials: tuple[Mapping[str, Any], ...]
    orders: Mapping[str, tuple[str, ...]]
    method: str = "mixed-precision: Hessian trace + inter-layer dependencies, bisection " \
                  "(Schaefer et al., 2023)"
    # Bits of the 8-bit layers' weight codes (7: AVX2 ``vpmaddubsw``, optc.quant.kernels);
    # their layers are labelled ``w7a8`` and stored as int8.
    int8_code_bits: int = 8
    # The 16-bit float type (``optc.quant.kernels.half_dtype``): its float layers are
    # labelled ``bf16`` when it is bfloat16, and 16-bit activations are bfloat16 too.
    half_dtype: str = "float16"

    def bits(self) -> dict[str, str]:
        """Layer key -> precision label (``fp32``, ``fp16``, ``bf16``, ``w8a8``, ``w4a16``...)."""
        return {layer.key: layer.precision for layer in self.layers}

    def as_dict(self) -> dict[str, Any]:
        return _jsonable(dataclasses.asdict(self))

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.as_dict(), indent=indent, sort_keys=False)


def build_report(*, graph: Graph, emitted: Graph, layers: Sequence[Layer],
                 result: SearchResult, traces: Mapping[str, float],
                 scores: Mapping[str, Mapping[str, Mapping[str, float]]],
                 fields: Mapping[str, Any]) -> Report:
    """Assemble the report; ``fields`` carries the run's settings (metric, max_drop...)."""
    chosen = result.chosen
    code_bits = int(fields.get("int8_code_bits", 8))
    half = str(fields.get("half_dtype", "float16"))
    rows = []
    for layer in layers:
        precision: LayerPrecision = chosen.assignment.get(layer.key, FP32)
        rows.append(LayerReport(
            key=layer.key, node=layer.node_name, op=layer.op,
            precision=code_label(precision, code_bits, half),
            weight_bits=precision.weight_bits, act_bits=precision.act_bits,
            hessian_trace=traces.get(layer.key), scores=scores.get(layer.key, {}),
            weight_elements=layer.weight_elements,
            weight_bytes_fp32=4 * layer.weight_elements,
            weight_bytes_packed=layer.weight_elements * precision.weight_bits / 8))
    fp32 = result.trials[0]
    return Report(
        baseline_score=fp32.measure.score, score=chosen.measure.score,
        drop=chosen.measure.drop, latency_fp32_s=fp32.latency_s, latency_s=chosen.latency_s,
        param_bytes_before=graph.param_bytes(), param_bytes_after=emitted.param_bytes(),
        layers=tuple(rows),
        trials=tuple(trial_row(t, half) for t in result.trials),
        orders=dict(result.orders), **fields)


def trial_row(trial: Trial, half_dtype: str = "float16") -> dict[str, Any]:
    """One measured assignment: layers per precision (``bf16`` for 16-bit float layers
    emitted in bfloat16), drop, loss, latency."""
    counts: dict[str, int] = {}
    for precision in trial.assignment.values():
        label = code_label(precision, half_dtype=half_dtype)
        counts[label] = counts.get(label, 0) + 1
    return {"lowered": counts, "drop": trial.measure.drop, "loss": trial.measure.loss,
            "latency_s": trial.latency_s, "feasible": trial.feasible}


def _jsonable(value: Any) -> Any:
    """Plain JSON types; non-finite floats become None (JSON has no inf/nan)."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
