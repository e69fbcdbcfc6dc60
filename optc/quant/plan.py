"""The mixed-precision flow: calibrate, estimate sensitivities, search, emit, report.

``quantize_mixed(graph, ctx, options)`` is the Python API behind the
``mixed-precision`` pass. Everything that does not depend on the options (calibration
outputs, activation ranges, Hessian traces, measured assignments) lives in a
``Session`` cached per graph in ``ctx.cache``, so the search's candidates (several
bit sets or drops on one graph) share it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Mapping, Sequence

import numpy as np

from optc.ir.graph import Graph
from optc.pipeline import PassContext
from optc.quant.calibration import Calibration, resolve_calibration
from optc.quant.emit import (
    QDQ_MIN_OPSET,
    WeightCache,
    default_opset,
    emit,
    takes_smoothing,
)
from optc.quant.evaluate import Evaluator, Measure, Metric
from optc.quant.kernels import PAIRS_CODE_BITS, float_depthwise, half_dtype, int8_code_bits
from optc.quant.latency import (
    HALF_DTYPES,
    HalfDtype,
    LatencyFn,
    latency_model,
    on_pairs_kernel,
)
from optc.quant.layers import Layer, neighbors, quantizable_layers, with_observed_macs
from optc.quant.numerics import (
    FP16,
    FP32,
    LayerPrecision,
    outlier_smoothing,
    precision_for,
    smoothed_range,
)
from optc.quant.report import REPORT_KEY, Report, build_report
from optc.quant.search import Assignment, Trial, bisect_ladder, frozen
from optc.quant.sensitivity import (
    Dependency,
    augmented_scores,
    dependency_terms,
    hessian_scores,
    hutchinson_traces,
    sensitivity_order,
)

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Options:
    """Settings of one run (the pass's options)."""

    max_drop: float = 0.01
    bits: tuple[int, ...] = (4, 8, 16)
    act_bits: int = 8
    metric: Metric = "auto"
    dependencies: bool = True
    hutchinson_samples: int = 8
    calib_samples: int = 256
    sensitivity_samples: int = 32
    seed: int = 0
    # Bits of 8-bit layers' weight codes: 7 or 8; None: what the target's int8 kernel
    # runs exactly (``optc.quant.kernels.int8_code_bits``: 7 for AVX2 ``vpmaddubsw``).
    int8_code_bits: int | None = None
    # Divide outlier channels of a MatMul / Gemm input before quantizing it, their weight
    # rows multiplied instead (``numerics.outlier_smoothing``, ``emit``).
    smooth_outliers: bool = True
    # Try 6-bit weights (``w6a8``) below the 8-bit step: None where the target's int8 codes
    # are 7-bit (AVX2 ``vpmaddubsw``: there 6-bit codes run on a faster kernel,
    # ``optc.quant.kernels.six_bit_kernel``), when 8 is in ``bits`` with 8-bit
    # activations; ``bits`` naming 6 asks for it too; False: never.
    six_bit: bool | None = None
    # Depthwise convs at 8-bit activations also where the target computes their int8
    # form on float32 vectors (x86 with AVX2, ``kernels.float_depthwise``): False keeps
    # them fp32 there, where int8 costs accuracy and buys no speed.
    int8_depthwise: bool = False
    # The 16-bit float type of fp16 layers and of 16-bit activations: "float16" or
    # "bfloat16"; None: bfloat16 where the target runs bfloat16 contractions natively
    # (``optc.quant.kernels.half_dtype``: x86 with AVX-512 BF16), else float16.
    half_dtype: HalfDtype | None = None

    def __post_init__(self) -> None:
        if self.int8_code_bits not in (None, 7, 8):
            raise ValueError(f"int8_code_bits must be 7, 8 or None, not {self.int8_code_bits}")
        if self.half_dtype not in (None, *HALF_DTYPES):
            raise ValueError(f"half_dtype must be one of {list(HALF_DTYPES)} or None, "
                             f"not {self.half_dtype!r}")

    def ladder(self, graph: Graph, int8_code_bits: int = 8) -> list[LayerPrecision]:
        """The bit-widths below fp32, widest first; integer ones only from opset 13; 6-bit
        weights where ``six_bit`` (None: ``int8_code_bits`` 7) and 8-bit activations."""
        bits = set(self.bits)
        if self.six_bit is False:
            bits.discard(PAIRS_CODE_BITS)
        elif self.act_bits != 8:
            if self.six_bit or PAIRS_CODE_BITS in bits:
                log.warning("mixed-precision: 6-bit weights need 8-bit activations; "
                            "not tried")
            bits.discard(PAIRS_CODE_BITS)
        elif self.six_bit or (int8_code_bits == 7 and 8 in bits):
            bits.add(PAIRS_CODE_BITS)
        steps = [precision_for(b, self.act_bits) for b in sorted(bits, reverse=True)
                 if b != 32]
        if default_opset(graph) < QDQ_MIN_OPSET and any(p.integer_weights for p in steps):
            log.warning("mixed-precision: opset %d has no per-channel DequantizeLinear; "
                        "only float16 is tried", default_opset(graph))
            steps = [p for p in steps if not p.integer_weights]
        return steps


class Session:
    """Per (graph, calibration, metric): evaluators, ranges, traces and measured trials.

    Drops are measured on every calibration sample (``evaluator``); sensitivities
    (Hessian traces, dependency losses: each a full model evaluation per layer) on the
    first ``sensitivity_samples`` of them (``probe``).
    """

    def __init__(self, graph: Graph, layers: Sequence[Layer], calibration: Calibration,
                 metric: Metric, sensitivity_samples: int, int8_code_bits: int = 8,
                 smooth_outliers: bool = True, half_dtype: str = "float16") -> None:
        self.graph = graph
        self.int8_code_bits = int8_code_bits
        self.half_dtype = half_dtype
        self.evaluator = Evaluator(graph, calibration, metric)
        subset = calibration.subset(sensitivity_samples)
        self.probe = self.evaluator if subset is calibration else \
            Evaluator(graph, subset, self.evaluator.metric)
        if any(layer.macs == 0 for layer in layers):  # dynamic shapes: look at one sample
            layers = with_observed_macs(layers, self.evaluator.output_shapes(
                graph, [layer.key for layer in layers]))
        self.layers = tuple(layers)
        self.by_key = {layer.key: layer for layer in layers}
        self.neighbors = neighbors(graph, layers)
        self.ranges, self.smoothing = activation_ranges(
            self.evaluator, graph, self.layers, smooth_outliers)
        self._traces: dict[tuple[int, int], dict[str, float]] = {}
        self._measures: dict[tuple[tuple[str, int, int], ...], Measure] = {}
        self._probes: dict[tuple[tuple[str, int, int], ...], float] = {}
        self._weights: WeightCache = {}
        self._last: tuple[tuple[tuple[str, int, int], ...], Graph] | None = None

    def traces(self, samples: int, seed: int) -> dict[str, float]:
        if (samples, seed) not in self._traces:
            found = hutchinson_traces(self.probe, self.graph, self.layers, samples, seed)
            self._traces[(samples, seed)] = {k: t.value for k, t in found.items()}
        return self._traces[(samples, seed)]

    def emitted(self, assignment: Assignment) -> Graph:
        key = _key(assignment)
        if self._last is None or self._last[0] != key:  # a trial is measured, then priced
            self._last = (key, emit(self.graph, self.layers, assignment, self.ranges,
                                    self._weights, self.int8_code_bits, self.smoothing,
                                    self.half_dtype))
        return self._last[1]

    def measure(self, assignment: Assignment) -> Measure:
        """Loss, score and drop on all calibration samples."""
        key = _key(assignment)
        if key not in self._measures:
            self._measures[key] = self.evaluator.measure(self.emitted(assignment))
        return self._measures[key]

    def probe_loss(self, assignment: Assignment) -> float:
        """Loss on the sensitivity samples."""
        if self.probe is self.evaluator:
            return self.measure(assignment).loss
        key = _key(assignment)
        if key not in self._probes:
            self._probes[key] = self.probe.measure(self.emitted(assignment)).loss
        return self._probes[key]


def session_for(graph: Graph, ctx: PassContext, layers: Sequence[Layer],
                options: Options) -> Session:
    calibration = resolve_calibration(graph, ctx.calibration, options.calib_samples,
                                      options.seed)
    code_bits = options.int8_code_bits or int8_code_bits(ctx.target)
    half = options.half_dtype or half_dtype(ctx.target)
    key = f"mixed-precision/{_digest(calibration)}/{options.metric}/" \
          f"{options.sensitivity_samples}/w{code_bits}/{half}" \
          f"{'/smooth' if options.smooth_outliers else ''}"
    return ctx.cache.get_or_compute(graph, key, lambda: Session(
        graph, layers, calibration, options.metric, options.sensitivity_samples,
        code_bits, options.smooth_outliers, half))


def activation_ranges(evaluator: Evaluator, graph: Graph, layers: Sequence[Layer],
                      smooth: bool = True) -> tuple[dict[str, tuple[float, float]],
                                                    dict[str, np.ndarray]]:
    """Per-tensor ranges of the layers' activations as they are quantized, and the
    smoothing divisors of those with outlier channels (``smooth``), which every layer
    reading them must take into its weight (``emit.takes_smoothing``)."""
    names = sorted({layer.activation for layer in layers})
    channels = evaluator.channel_ranges(graph, names)
    ranges, smoothing = {}, {}
    for name in names:
        low, high = channels[name]
        divisors = outlier_smoothing(low, high) if smooth else None
        readers = [layer for layer in layers if layer.activation == name]
        if divisors is not None and all(takes_smoothing(graph, layer, divisors.size)
                                        for layer in readers):
            smoothing[name] = divisors
        ranges[name] = smoothed_range(low, high, smoothing.get(name))
    return ranges, smoothing


def quantize_mixed(graph: Graph, ctx: PassContext,
                   options: Options = Options()) -> tuple[Graph, Report | None]:
    """The graph with the chosen precisions emitted, and the report (None when no layer
    is quantizable). The very same graph comes back when nothing could be lowered."""
    layers = quantizable_layers(graph)
    ladder = options.ladder(graph, options.int8_code_bits or int8_code_bits(ctx.target))
    if not layers or not ladder:
        return graph, None
    session = session_for(graph, ctx, layers, options)
    layers = list(session.layers)
    latency, latency_name = latency_model(ctx, layers, graph, session.half_dtype)
    scores: dict[str, dict[str, dict[str, float]]] = {}
    traces: dict[str, float] = {}  # filled only if some step needs an order

    def order_for(precision: LayerPrecision, keys: Sequence[str],
                  current: Assignment) -> list[str]:
        traces.update(session.traces(options.hutchinson_samples, options.seed))
        return _order(session, precision, keys, current, traces, options, scores)

    def evaluate(assignment: Assignment) -> Trial:
        return _trial(session, assignment, latency, options.max_drop)

    float_dw = not options.int8_depthwise and float_depthwise(ctx.target)

    def eligible(precision: LayerPrecision, key: str) -> bool:
        layer = session.by_key[key]
        if float_dw and precision.act_bits == 8 and layer.kind == "depthwise":
            return False
        # bfloat16 depthwise convs are widened to float32 (``optc.quant.latency.
        # on_bf16_kernel``): no faster, only less accurate; they stay fp32 unless asked to
        # reach int8 (``int8_depthwise``), which the ladder reaches through the 16-bit step
        if not options.int8_depthwise and precision == FP16 and \
                session.half_dtype == "bfloat16" and layer.kind == "depthwise":
            return False
        # 6-bit codes only where the 6-bit kernel runs them: EfficientNet-Lite0 all-w6a8
        # (depthwise convs and the stem included) lost 0.085 logit cosine, all-w7a8 0.023
        return precision.weight_bits != PAIRS_CODE_BITS or on_pairs_kernel(layer)

    result = bisect_ladder([layer.key for layer in layers], ladder, order_for, evaluate,
                           eligible)
    emitted = session.emitted(result.chosen.assignment)
    report = build_report(graph=graph, emitted=emitted, layers=layers, result=result,
                          traces=traces, scores=scores, fields={
                              "metric": session.evaluator.metric, "max_drop": options.max_drop,
                              "calibration": session.evaluator.calibration.source,
                              "synthetic_calibration": session.evaluator.calibration.synthetic,
                              "samples": session.evaluator.calibration.size,
                              "latency_model": latency_name,
                              "dependencies": options.dependencies,
                              "int8_code_bits": session.int8_code_bits,
                              "half_dtype": session.half_dtype,
                              "fidelity": session.evaluator.fidelity(emitted)})
    if emitted is graph:
        return graph, report
    metadata = {**graph.metadata, REPORT_KEY: report.to_json()}
    return emitted.replace(metadata=metadata), report


def _order(session: Session, precision: LayerPrecision, keys: Sequence[str],
           current: Assignment, traces: Mapping[str, float], options: Options,
           scores: dict[str, dict[str, dict[str, float]]]) -> list[str]:
    """Candidates at ``precision``, least sensitive first (Hessian, plus dependencies)."""
    candidates = [session.by_key[k] for k in keys]
    hessian = hessian_scores(session.graph, candidates, traces, precision,
                             session.int8_code_bits, session.half_dtype)
    final = hessian
    found: dict[str, Dependency] = {}
    if options.dependencies:
        found = dependency_terms(keys, session.neighbors, current, precision,
                                 lambda a: session.probe_loss(frozen(a)))
        final = augmented_scores(hessian, found)
    for key in keys:
        row = {"hessian": hessian[key], "score": final[key]}
        if key in found:
            row.update(alone=found[key].alone, together=found[key].together,
                       interaction=found[key].interaction)
        scores.setdefault(key, {})[precision.label] = row
    return sensitivity_order(final, keys)


def _trial(session: Session, assignment: Assignment, latency: LatencyFn,
           max_drop: float) -> Trial:
    measure = session.measure(assignment)
    seconds = latency(session.emitted(assignment), assignment)
    return Trial(assignment, measure, seconds, feasible=measure.drop <= max_drop)


def _key(assignment: Assignment) -> tuple[tuple[str, int, int], ...]:
    return tuple(sorted((k, p.weight_bits, p.act_bits) for k, p in assignment.items()
                        if p != FP32))


def _digest(calibration: Calibration) -> str:
    """Content hash of the calibration samples (the session cache key)."""
    digest = hashlib.sha256()
    for name, array in sorted(calibration.as_mapping().items()):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]
