"""mixed-precision: per-layer bit-widths from Hessian sensitivity plus inter-layer dependencies."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import ClassVar, Literal

from optc.errors import UserInputError
from optc.ir.graph import Graph
from optc.pipeline import Pass, PassContext
from optc.quant.layers import quantizable_layers
from optc.quant.numerics import WEIGHT_BITS
from optc.quant.plan import Options, quantize_mixed

CANDIDATE_BITS = ((16,), (8, 16), (4, 8, 16))
DROP_FRACTIONS = (1 / 2, 1 / 4, 1 / 8)
"""Smaller drops proposed as candidates, as fractions of the configured ``max-drop``."""


@dataclasses.dataclass(frozen=True)
class MixedPrecision(Pass):
    """Give each Conv / Gemm / MatMul the narrowest precision the accuracy budget allows.

    Lossy. After Schaefer et al., "Augmenting Hessians with Inter-Layer Dependencies for
    Mixed-Precision Post-Training Quantization" (arXiv:2306.04879, 2023):

    1. sensitivity of each layer at each bit-width: the Hessian trace of the loss w.r.t.
       its weights (Hutchinson, double backprop through the reference interpreter)
       times its quantization error, ``Tr(H_ii)/n_i * ||Q(W_i) - W_i||^2 / 2`` (HAWQ-v2);
    2. augmented with inter-layer dependencies: the loss increase measured on the
       emitted graph when the layer is lowered alone and when it is lowered together
       with the layers it feeds and is fed by (the latter net of those layers' own
       loss), averaged: ``S_i = Omega_i/2 + (dL(i) + dL(i+N) - dL(N)) / 2``;
    3. bisection over the order by ``S_i``, widest bit-width first (fp16, int8, int4),
       for the longest prefix whose drop stays within ``max-drop``; a width that is not
       faster than the one above it (fp16 on a CPU without float16 arithmetic, 4-bit
       codes stored as int8) is skipped; the lowest-latency measured assignment within
       the drop wins. Latency: ``ctx.analyses["latency"]``, else the roofline model on
       ``ctx.target``, else a proxy priced for this host's CPU (``optc.quant.latency``).

    Loss: cross-entropy with calibration ``labels``, else KL(fp32 || quantized) on
    logits, else MSE. Drop: top-1 accuracy with labels, else top-1 agreement with the
    fp32 model (cosine similarity for non-logit outputs), on the calibration samples
    (``ctx.calibration``: arrays named like the inputs, optional ``labels``; without
    them, synthetic inputs and a warning).

    Where this departs from the paper (its full text was not available offline; the
    method follows its abstract and optc's issue): the exact form of the dependency
    term is ours (``optc.quant.sensitivity`` gives the reasons and the alternatives
    measured); weights use MSE-optimal per-channel clipping; 4-bit codes are stored as
    int8 (``optc.quant.emit`` says why); 8-bit activations are uint8 QDQ on the layer's
    input, 16-bit activations mean 16-bit float compute: bfloat16 where the compile
    target runs bfloat16 contractions natively (x86 with AVX-512 BF16, ``vdpbf16ps``:
    ``ctx.target``, else this host; ``optc.quant.kernels.half_dtype``), float16 elsewhere
    (``half``; the report says which, layers labelled ``bf16``). On x86 without float16
    arithmetic a float16 layer is widened to float32 and no faster, so the ladder skips
    it there, while a bfloat16 one is priced faster than fp32 where ``vdpbf16ps`` runs it
    (matmuls, one-group convs over an even number of channels; depthwise convs have no
    such form and stay fp32, unless ``int8-depthwise``). Where the
    compile target's int8 kernel is AVX2 ``vpmaddubsw`` (x86 without AVX-512 VNNI:
    ``ctx.target``, else this host), 8-bit weights get 7-bit codes in [-63, 63] so that
    the kernel is exact and the measured drop is the deployed model's
    (``optc.quant.kernels``; reported as ``w7a8``).
    There, 6-bit weights (codes in [-31, 31], ``w6a8``) run on a faster exact kernel
    (two ``vpmaddubsw`` added in int16 before one ``vpmaddwd``), so the ladder gets a
    ``w6a8`` step below ``w7a8``, ordered and bisected like the others (``six-bit``).

    Ordering: after ``fold-batchnorm`` (quantize the weights that will be deployed) and
    after any pass that changes the layers. Only the first graph output is scored.

    Options: ``max-drop``, ``bits``, ``act-bits``, ``metric``, ``dependencies``,
    ``hutchinson-samples``, ``calib-samples``, ``sensitivity-samples``, ``seed``,
    ``smooth-outliers``, ``six-bit``, ``int8-depthwise``, ``half``.

    Depthwise convs stay fp32 where the target computes their int8 form on float32
    vectors anyway (x86 with AVX2, ``optc.quant.kernels.float_depthwise``): no faster
    there, only less accurate (EfficientNet-Lite0 on a Zen 4: logit cosine 0.9929 ->
    0.9954 at 0.999x the time of all-w8a8); ``int8-depthwise`` quantizes them anyway.

    Outlier channels: a MatMul / Gemm input whose largest channel peak is at least 2x
    the 99th percentile of the peaks (transformers' GELU and LayerNorm outputs) is
    divided channel-wise down to that percentile before it is quantized, the weight rows
    multiplied instead (``optc.quant.numerics.outlier_smoothing``): MiniLM-L6 all-w7a8
    went from 0.990 to 0.996 cosine (real tokens of its calibration sentences; the
    cosine skips padded tokens, ``optc.quant.evaluate``).

    Cost: per bit-width step that needs an order, 3 model evaluations per layer on the
    sensitivity samples (dependencies) and a few on all samples (bisection), plus
    ``hutchinson-samples`` Hessian-vector products per layer once. Seconds for the
    digits CNN; on two CPU cores about an hour for EfficientNet-Lite0 at 224x224 with
    the defaults (use a GPU-backed interpreter or fewer samples).

    Before -> after (a ``w8a8`` layer)::

        %y = Conv(%x, %w, %b)
      ->
        %x.q  = QuantizeLinear(%x, %x.scale, %x.zero)
        %x.dq = DequantizeLinear(%x.q, %x.scale, %x.zero) @precision(bits=8)
        %w.dq = DequantizeLinear(%w.q8, %w.scale8) {axis=0} @precision(bits=8)
        %y    = Conv(%x.dq, %w.dq, %b) @precision(bits=8, per_channel=true)

    The report (per-layer precision, sensitivities, trials, latency, drop) is stored as
    JSON in the output graph's metadata under ``optc.mixed_precision``.
    """

    name: ClassVar[str] = "mixed-precision"
    exact: ClassVar[bool] = False

    max_drop: float = dataclasses.field(default=0.01, metadata={
        "help": "largest allowed drop of accuracy (with labels) or top-1 agreement with "
                "the fp32 model, as a fraction (0.01 = one point)"})
    bits: tuple[int, ...] = dataclasses.field(default=(4, 8, 16), metadata={
        "help": "weight bit-widths to try below fp32, from {4, 6, 8, 16}; 4, 6 and 8 "
                "are integer (per-channel symmetric; 6 only with 8-bit activations), "
                "16 is 16-bit float (see half)"})
    act_bits: Literal[8, 16] = dataclasses.field(default=8, metadata={
        "help": "activations of integer-weight layers: 8 = uint8 QDQ, 16 = 16-bit "
                "float (see half)"})
    metric: Literal["auto", "accuracy", "agreement", "cosine"] = dataclasses.field(
        default="auto", metadata={
            "help": "what max-drop bounds: auto = accuracy with labels, else top-1 "
                    "agreement (logits) or cosine similarity to the fp32 output"})
    dependencies: bool = dataclasses.field(default=True, metadata={
        "help": "augment the Hessian with measured inter-layer dependencies (off: "
                "plain Hessian-trace ordering, fewer model evaluations)"})
    hutchinson_samples: int = dataclasses.field(default=8, metadata={
        "help": "Rademacher vectors per layer for the Hutchinson Hessian-trace estimate "
                "(each costs one Hessian-vector product per layer)"})
    calib_samples: int = dataclasses.field(default=256, metadata={
        "help": "calibration samples used at most (the first ones); drops are measured "
                "on all of them"})
    sensitivity_samples: int = dataclasses.field(default=32, metadata={
        "help": "calibration samples the sensitivities (Hessian traces, dependency "
                "losses) are estimated on (the first ones)"})
    seed: int = dataclasses.field(default=0, metadata={
        "help": "seed of the Rademacher vectors and of synthetic calibration data"})
    smooth_outliers: bool = dataclasses.field(default=True, metadata={
        "help": "divide outlier channels of a MatMul/Gemm input before quantizing it "
                "and multiply the weight rows instead (off: per-tensor ranges as is)"})
    six_bit: bool = dataclasses.field(default=True, metadata={
        "help": "also try 6-bit weights (w6a8) below 8-bit ones where the target's int8 "
                "kernel runs them faster (x86 AVX2 without AVX-512 VNNI); off: only "
                "if bits names 6"})
    int8_depthwise: bool = dataclasses.field(default=False, metadata={
        "help": "also quantize depthwise convs where the target computes their int8 "
                "form on float32 vectors (x86 with AVX2: no faster than fp32, only less "
                "accurate); off: they stay fp32 there, and out of the bfloat16 16-bit "
                "step (widened to float32 too)"})

    half: Literal["auto", "float16", "bfloat16"] = dataclasses.field(
        default="auto", metadata={
            "help": "float type of 16-bit layers and activations: auto = bfloat16 where "
                    "the target runs bfloat16 contractions natively (x86 with AVX-512 "
                    "BF16, e.g. Zen 4, Sapphire Rapids), else float16; float16 or "
                    "bfloat16 force one (elsewhere the code generator widens either to "
                    "float32)"})

    def __post_init__(self) -> None:
        bad = [b for b in self.bits if b not in WEIGHT_BITS]
        if bad or not self.bits:
            raise UserInputError(f"mixed-precision: bits {list(self.bits)} must be a "
                                 f"non-empty list from {list(WEIGHT_BITS)}")
        if self.max_drop < 0 or min(self.hutchinson_samples, self.calib_samples,
                                    self.sensitivity_samples) < 1:
            raise UserInputError("mixed-precision: max-drop must be >= 0; "
                                 "hutchinson-, calib- and sensitivity-samples >= 1")

    def options_record(self) -> Options:
        return Options(max_drop=self.max_drop, bits=self.bits, act_bits=self.act_bits,
                       metric=self.metric, dependencies=self.dependencies,
                       hutchinson_samples=self.hutchinson_samples,
                       calib_samples=self.calib_samples,
                       sensitivity_samples=self.sensitivity_samples, seed=self.seed,
                       smooth_outliers=self.smooth_outliers,
                       six_bit=None if self.six_bit else 6 in self.bits,
                       int8_depthwise=self.int8_depthwise,
                       half_dtype=None if self.half == "auto" else self.half)

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        after, report = quantize_mixed(graph, ctx, self.options_record())
        if report is not None:
            ctx.logger.info("mixed-precision: %s; drop %.4f (max %.4f), latency %.3g s -> "
                            "%.3g s (%s)", _summary(report.bits()), report.drop,
                            self.max_drop, report.latency_fp32_s, report.latency_s,
                            report.latency_model)
        return after

    def candidates(self, graph: Graph, ctx: PassContext) -> Iterator[MixedPrecision]:
        """Bit sets from fp16-only to fp16+int8+int4, with 8- and 16-bit activations, at
        this ``max-drop``; and the full ladder at 1/2, 1/4 and 1/8 of it.

        Each proposal is the fastest assignment within its drop, so the smaller drops
        are what gives a budgeted search points between "everything the drop allows"
        and fp32: on EfficientNet-Lite0 (logit cosine) all 50 layers fit in a drop of
        0.01 (0.007), and with only half the drop the search could buy no accuracy at a
        budget between the all-int8 and the fp32 latency."""
        if not quantizable_layers(graph):
            return
        seen: set[tuple[object, ...]] = set()
        for bits in CANDIDATE_BITS:
            acts = (8, 16) if min(bits) <= 8 else (self.act_bits,)
            for act in acts:
                yield from _unique(dataclasses.replace(self, bits=bits, act_bits=act), seen)
        for fraction in DROP_FRACTIONS:
            yield from _unique(dataclasses.replace(self, max_drop=self.max_drop * fraction),
                               seen)


def _unique(candidate: MixedPrecision, seen: set[tuple[object, ...]],
            ) -> Iterator[MixedPrecision]:
    key = tuple(dataclasses.astuple(candidate))
    if key not in seen:
        seen.add(key)
        yield candidate


def _summary(bits: dict[str, str]) -> str:
    counts: dict[str, int] = {}
    for label in bits.values():
        counts[label] = counts.get(label, 0) + 1
    return ", ".join(f"{n} {label}" for label, n in sorted(counts.items()))
