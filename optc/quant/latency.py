"""Latency of a candidate assignment: pluggable, from the ``PassContext`` when it can say.

In order of preference:

1. an analysis registered as ``"latency"`` in ``ctx.analyses``: ``fn(graph, ctx)``
   returning seconds, or a record with ``latency_s`` (a measured or learned model);
2. ``ctx.target`` set: the roofline model, ``optc.cost.roofline.RooflineModel().estimate(
   graph, target).latency_s`` on the emitted graph;
3. otherwise a documented proxy (``proxy_latency``) for optc's code generator on this
   host (``host_rates``): a float32 layer costs its weight bytes at a nominal 100 GB/s
   plus its multiply-accumulates at a nominal 1e12 MAC/s; other precisions cost a
   measured factor of that (``ProxyRates``; native float16: bytes as stored plus twice
   the float32 rate; bfloat16 on AVX-512 BF16: ``BF16_DOT``; int8 by the kind of kernel
   optc gives the layer, ``optc.quant.layers.int8_kind``). Only its ratios matter: it
   ranks assignments, it does not predict a device.

Why the proxy is host-aware: a flat "float16 is twice float32, int8 four times" made the
search keep MiniLM's layers at fp16 on a CPU without float16 arithmetic (x86 before
AVX512-FP16), where ``optc.codegen.quantized`` runs them as float32 multiply-adds on
widened float16 operands (measured on Zen 4, MiniLM-L6 batch 1: all-fp16 5.5 ms vs fp32
5.2 ms), and pick 4-bit weights for their "half the bytes" although 4-bit codes are
stored and read as int8 (``optc.quant.emit``): no faster than 8-bit, only less accurate.

A model that cannot price the fp32 graph (the roofline needs static shapes) is replaced
by the proxy, with a warning, for every assignment, so all are priced alike.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from optc.errors import OptcError
from optc.ir.graph import Graph
from optc.pipeline import PassContext
from optc.quant.layers import Layer
from optc.quant.numerics import FP32, LayerPrecision

log = logging.getLogger(__name__)

PAIRS_MIN_K = 32
"""``optc.codegen.schedules.vnni.PAIRS_MIN_K`` (not imported: that imports TVM)."""

LatencyFn = Callable[[Graph, Mapping[str, LayerPrecision]], float]
HalfDtype = Literal["float16", "bfloat16"]
HALF_DTYPES: tuple[HalfDtype, ...] = ("float16", "bfloat16")
"""The 16-bit float types the ``mixed-precision`` pass emits (``optc.quant.kernels``)."""
"""``latency(emitted graph, assignment) -> seconds``."""

PROXY_BANDWIDTH = 100e9
PROXY_FP32_MACS = 1e12
CPUINFO = Path("/proc/cpuinfo")

# CPU flags (``/proc/cpuinfo``) of float16 arithmetic: without them a float16 layer
# runs on float32 units (``optc.codegen.quantized._widened``).
_FP16_FLAGS = ("avx512_fp16", "asimdhp", "fphp")
# AVX-512 BF16: ``vdpbf16ps`` (``optc.codegen.schedules.hw.has_bf16_dot``), 32 bfloat16
# products per instruction where a float32 FMA does 16; the packed kernel needs AVX-512 BW
# too. There the 16-bit rung is emitted in bfloat16 (``optc.quant.kernels.half_dtype``).
BF16_FLAGS = ("avx512_bf16", "avx512bw", "avx512vl")  # ``hw.has_bf16_dot``'s features
# AVX-512 VNNI: ``vpdpbusd`` (``optc.codegen.schedules.vnni``), 64 uint8 x int8
# multiply-adds per instruction where a float32 FMA does 16.
_VNNI_FLAGS = ("avx512_vnni",)

# Measured time of a layer relative to the same layer in float32, for the kinds whose
# speed is not what their bit-widths suggest. MiniLM-L6 batch 1 on Zen 4 (AVX-512 VNNI,
# no float16 arithmetic), every layer at one precision, end to end (the attention,
# softmax and layer norms included, so the layers' own ratios are at least this good):
# fp32 5.2 ms, fp16 5.5 ms, w4a16 4.6 ms, w8a8 2.3 ms (docs/benchmarks.md).
FP16_WIDENED = 5.5 / 5.2    # float16 operands, float32 arithmetic: converted per load
WEIGHT_ONLY_WIDENED = 4.6 / 5.2  # int8 codes read into float32 arithmetic
INT8_VNNI = 2.3 / 5.2
# bfloat16 layers (bfloat16 activations and weights, float32 accumulation) on optc's
# packed ``vdpbf16ps`` kernel, against its float32 kernel, per layer (paired, 2 threads,
# 2-vCPU Zen 4 under load, 2026-12-07): matmuls 16 x 384 -> 1536 0.53x and -> 384 0.57x,
# a 1x1 conv 64 -> 64 at 56x56 0.61x, 3x3 convs 64 -> 64 at 56x56 0.44x and stride-2 128
# -> 256 at 28x28 0.56x; the median (ad-hoc scripts, not kept). Whole models gain less
# (attention, softmax, norms and depthwise convs stay float32): every layer at the 16-bit
# rung took 0.54-0.73x fp32 (``benchmarks/quantize_vs_ort.py``, docs/benchmarks.md).
BF16_DOT = 0.55
# bfloat16 where the code generator widens it to float32 and runs its float32 kernel
# (no AVX-512 BF16, or a layer ``vdpbf16ps`` cannot run, ``on_bf16_kernel``: it sums
# pairs of input channels, so grouped convs, depthwise ones included, and convs over an
# odd number of channels, such as RGB stems, are widened; ``optc.codegen.quantized.
# _widened``): not measured; priced like widened float16 (converted operands, float32
# arithmetic).
BF16_WIDENED = FP16_WIDENED
# x86 without AVX2 (no packed int8 kernel) and other CPUs: the figure measured on
# Zen 3 with AVX2 ``vpmaddwd`` kernels (``optc.codegen.schedules.vnni.AVX2``, 2 threads,
# same process): MiniLM-L6 all-w8a8 26.8 ms vs fp32 54.4 ms, kept as the nominal int8
# price where nothing better was measured.
INT8_NO_VNNI = 26.8 / 54.4
# x86 with AVX2 but no AVX-512 VNNI: 7-bit codes on ``vpmaddubsw`` + ``vpmaddwd``
# (``vnni.PMADDUBSW``, ``optc.quant.kernels``). Per kernel against optc's float32 one,
# interleaved medians, znver3 code (2 threads) on a Zen 5 VM (/tmp/helperB
# kernels_bench.py, 2026-12-06): MiniLM matmuls 16 x 384 -> 384 / 1536, 16 x 1536 ->
# 384: 0.76, 0.47, 0.24; EfficientNet-Lite0 1x1 convs 24 -> 144 at 56x56, 144 -> 24
# at 56x56, 240 -> 40 at 28x28, 480 -> 80 and 80 -> 480 at 14x14, 1152 -> 192 and
# 320 -> 1280 at 7x7: 0.82, 0.56, 0.46, 0.57, 0.70, 0.42, 0.41; geometric mean 0.51
# (8-bit codes on ``vpmaddwd``, same runs: 0.62-0.90, geometric mean 0.73).
INT8_PMADDUBSW = 0.51
# The same targets with 6-bit codes (``w6a8``) on ``vpmaddubsw`` pairs
# (``vnni.PMADDUBSW_PAIRS``; K, and a spatial conv's channels, multiples of 8): per kernel
# against the 7-bit kernel, paired calls, znver3 code, 2 threads on the shared Zen 3 VM
# (/tmp/helperB/pairs kbench.py, 2026-12-07, under load): MiniLM matmuls 16 x 384 ->
# 384 / 1536, 16 x 1536 -> 384: 0.89, 0.92, 0.96; EfficientNet-Lite0 1x1 convs 144 ->
# 24 at 56x56, 480 -> 80 at 14x14, 1152 -> 192 at 7x7: 0.93, 0.92, 1.00; Fashion-MNIST
# 3x3 convs 32 -> 64 at 14x14, 64 -> 128 at 7x7: 0.99, 0.93; geometric mean 0.94.
PAIRS_VS_PMADDUBSW = 0.94
INT8_PAIRS = INT8_PMADDUBSW * PAIRS_VS_PMADDUBSW
# Convolutions without a packed int8 kernel (``optc.quant.layers.int8_kind``: grouped,
# or channels not multiples of 4 in / 8 out), measured per kernel on Zen 3 (AVX2, 2
# threads, kernel minima) when the Fashion-MNIST CNN's 3x3 convolutions (32 -> 64
# channels at 14x14, 64 -> 128 at 7x7) still ran that way: 433 + 183 us in int8 against
# 74 + 86 us in float32 (all-int8, the model ran 2x slower than in float32). Now packed
# as implicit GEMMs (``vnni_pack.packed_conv``) they are priced as "dot" layers:
# interleaved, znver3 code on a Zen 5 VM (/tmp/helperB spatial_bench.py, 2026-12-06),
# against optc's float32 kernel, 32 -> 64 at 14x14, 64 -> 128 at 7x7, 16 -> 32 at 8x8,
# 32 -> 64 at 4x4: 7-bit codes on ``vpmaddubsw`` 0.48, 0.45, 0.59, 0.56; 8-bit codes on
# ``vpmaddwd`` 0.74, 0.72, 0.75, 0.71; the generic loop 1.65, 1.22, 1.25, 1.18.
# A stem runs in float32 (quantized activations around it).
INT8_SPATIAL = (433 + 183) / (74 + 86)
INT8_STEM = 1.0
# Depthwise convolutions on x86 with AVX2 run exactly on float32 vectors, reading uint8
# activations and requantizing in their epilogue (``optc.codegen.quantized.
# _exact_float_depthwise``). Per kernel against optc's float32 depthwise conv (float
# in and out), interleaved medians, 2 threads on a shared Zen 5 VM (/tmp/helperC
# dw_kernel.py, 2026-12-06), EfficientNet-Lite0's shapes 32ch 112x112 3x3, 144ch
# 56x56 5x5/2, 240ch 28x28 5x5, 480ch 14x14 3x3, 672ch 14x14 5x5/2: host code (AVX-512)
# 1.03, 0.86, 0.88, 0.87, 0.87 (geometric mean 0.90); znver3 code (AVX2) 1.13, 0.86,
# 0.82, 1.02, 1.07 (0.97). (The int32 loop they replace measured 0.82-1.21 in the
# same runs; end to end, EfficientNet-Lite0 all-int8 ran 0.70x as long with the float
# form on host code, 0.93x on znver3 code: /tmp/helperC dw_e2e.py.) Elsewhere the
# int32 loop keeps the nominal int8 factor. EfficientNet-Lite0 all-w8a8 but its 16
# depthwise convs fp32 took 0.999x the time of all-w8a8 (Zen 4, paired, one thread), so
# on x86 the search leaves them fp32 (``plan.Options.int8_depthwise``): these factors
# price them only when it is asked to quantize them.
INT8_DEPTHWISE_VNNI = 0.90
INT8_DEPTHWISE_AVX2 = 0.97


@dataclasses.dataclass(frozen=True)
class ProxyRates:
    """What the proxy charges: float32 multiply-accumulates per second, weight bytes per
    second, and for each other compute kind either a nominal rate (native float16:
    twice float32) or a measured factor on the layer's float32 cost (``None``: nominal).
    """

    fp32_macs: float = PROXY_FP32_MACS
    bandwidth: float = PROXY_BANDWIDTH
    fp16_factor: float | None = FP16_WIDENED
    bf16_factor: float | None = BF16_WIDENED
    """16-bit float layers when ``half_dtype`` is bfloat16 (``None``: nominal, as float16)."""
    half_dtype: str = "float16"
    """The float type the 16-bit layers are emitted in (``optc.quant.kernels.half_dtype``)."""
    weight_only_factor: float | None = WEIGHT_ONLY_WIDENED
    int8_factor: float = INT8_NO_VNNI
    int8_spatial_factor: float = INT8_SPATIAL
    int8_stem_factor: float = INT8_STEM
    int8_depthwise_factor: float | None = None
    """``None``: the ``int8_factor`` (no float form of the depthwise kernel)."""
    int8_narrow_factor: float | None = None
    """Dot layers (implicit-GEMM convs included) with codes of at most 6 bits and input
    channels a multiple of 8, where a faster kernel runs them (``INT8_PAIRS``); ``None``:
    no such kernel, the ``int8_factor``."""

    def layer_seconds(self, layer: Layer, precision: LayerPrecision) -> float:
        fp32 = layer.weight_elements * 4 / self.bandwidth + layer.macs / self.fp32_macs
        if precision == FP32:
            return fp32
        if precision.act_bits == 8:  # uint8 x int8 -> int32 kernels
            factor = {"spatial": self.int8_spatial_factor, "stem": self.int8_stem_factor,
                      "depthwise": self.int8_depthwise_factor}.get(layer.kind)
            factor = self.int8_factor if factor is None else factor
            if (precision.weight_bits <= 6 and on_pairs_kernel(layer)
                    and self.int8_narrow_factor is not None):
                factor = self.int8_narrow_factor
            return fp32 * factor
        if precision.weight_bits == 16 and self.half_dtype == "bfloat16":
            factor = self.bf16_factor if on_bf16_kernel(layer) else BF16_WIDENED
        elif precision.weight_bits == 16:
            factor = self.fp16_factor
        else:  # integer weights with 16-bit activations: the codes read in the kernel
            factor = self.weight_only_factor
        if factor is not None:
            return fp32 * factor
        return (layer.weight_elements * stored_weight_bits(precision) / 8 / self.bandwidth
                + layer.macs / (2 * self.fp32_macs))


def on_pairs_kernel(layer: Layer) -> bool:
    """Whether codes of at most 6 bits put ``layer`` on the faster int8 kernel of AVX2
    targets without VNNI (``vnni.PMADDUBSW_PAIRS``): a packed dot layer whose input
    channels are a multiple of 8, with at least ``vnni.PAIRS_MIN_K`` (32) multiply-adds
    per output. Depthwise convs (float32 vectors) and stems (float32) only lose accuracy
    with them."""
    return (layer.kind == "dot" and layer.in_channels > 0 and layer.in_channels % 8 == 0
            and layer.depth >= PAIRS_MIN_K)


def on_bf16_kernel(layer: Layer) -> bool:
    """Whether the code generator runs ``layer`` in bfloat16 on ``vdpbf16ps`` where the
    target has it (``optc.codegen.quantized._on_bf16_dot``): a MatMul / Gemm over
    an even depth, or a Conv with one group over an even number of input channels (the
    instruction sums pairs), with a multiple of 8 outputs (its 256-bit form's lanes);
    other bfloat16 layers are widened to float32."""
    outputs = layer.weight_elements // layer.depth if layer.depth else 0
    if outputs == 0 or outputs % 8:
        return False
    if layer.op != "Conv":
        return layer.depth % 2 == 0
    return layer.groups == 1 and layer.in_channels % 2 == 0


def host_rates(flags: Collection[str] | None = None,
               half_dtype: str | None = None) -> ProxyRates:
    """The proxy's figures for optc's CPU code generator on a CPU with ``flags``
    (default: this machine's; none known: no float16 arithmetic, no VNNI), its 16-bit
    layers emitted in ``half_dtype`` (default: bfloat16 where ``native_bf16(flags)``,
    as ``optc.quant.kernels.half_dtype`` decides for this host, else float16)."""
    flags = cpu_flags() if flags is None else flags
    native_fp16 = any(f in flags for f in _FP16_FLAGS)
    bf16 = native_bf16(flags)
    half_dtype = half_dtype or half_dtype_for_flags(flags)
    depthwise = narrow = None
    if any(f in flags for f in _VNNI_FLAGS):
        int8, depthwise = INT8_VNNI, INT8_DEPTHWISE_VNNI
    elif "avx2" in flags:
        int8, depthwise, narrow = INT8_PMADDUBSW, INT8_DEPTHWISE_AVX2, INT8_PAIRS
    else:
        int8 = INT8_NO_VNNI
    return ProxyRates(
        fp16_factor=None if native_fp16 else FP16_WIDENED,
        bf16_factor=BF16_DOT if bf16 else BF16_WIDENED, half_dtype=half_dtype,
        weight_only_factor=None if native_fp16 else WEIGHT_ONLY_WIDENED,
        int8_factor=int8, int8_depthwise_factor=depthwise, int8_narrow_factor=narrow)


def native_bf16(flags: Collection[str]) -> bool:
    """Whether a CPU with ``flags`` runs optc's bfloat16 contractions on ``vdpbf16ps``."""
    return all(f in flags for f in BF16_FLAGS)


def half_dtype_for_flags(flags: Collection[str]) -> HalfDtype:
    """The 16-bit float type for a CPU with ``flags`` (``optc.quant.kernels.half_dtype``
    for this host): AVX-512 BF16 (with AVX-512 BW, which the packed kernel's shuffles
    need, and VL, its 256-bit form) -> "bfloat16", else "float16"."""
    return "bfloat16" if native_bf16(flags) else "float16"


def cpu_flags() -> frozenset[str]:
    """This machine's CPU flags. Read here, not through ``optc.codegen.host_cpu``:
    importing ``optc.codegen`` imports TVM, which the search does not otherwise need."""
    try:
        text = CPUINFO.read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            return frozenset(value.split())
    return frozenset()


def stored_weight_bits(precision: LayerPrecision) -> int:
    """Bits per weight the deployed model stores and reads: integer codes (4-bit ones
    included, ``optc.quant.emit``) are int8."""
    return 8 if precision.integer_weights else precision.weight_bits


def proxy_latency(layers: Sequence[Layer], rates: ProxyRates | None = None) -> LatencyFn:
    """The proxy over ``layers`` (other nodes cost the same in every assignment), with
    ``rates`` (default: ``host_rates()``)."""
    rates = host_rates() if rates is None else rates

    def latency(graph: Graph, assignment: Mapping[str, LayerPrecision]) -> float:
        return sum(rates.layer_seconds(layer, assignment.get(layer.key, FP32))
                   for layer in layers)

    return latency


def latency_model(ctx: PassContext, layers: Sequence[Layer], graph: Graph,
                  half_dtype: str | None = None) -> tuple[LatencyFn, str]:
    """The latency function to use and a name for reports; the model is tried on the fp32
    ``graph`` first so that all assignments are priced by the same one. ``half_dtype``:
    the float type of the 16-bit layers (the proxy's; the other models read it from the
    emitted graph)."""
    proxy = proxy_latency(layers, host_rates(half_dtype=half_dtype))
    if "latency" in ctx.analyses:
        return _checked(lambda g: _seconds(ctx.analysis("latency", g)), proxy, graph,
                        "ctx.analyses['latency']")
    if ctx.target is not None:
        try:
            from optc.cost.roofline import RooflineModel
        except ImportError:  # the cost package is optional for this pass
            log.warning("mixed-precision: no roofline model available; using the proxy")
            return proxy, "proxy"
        model, target = RooflineModel(), ctx.target
        name = getattr(target, "name", str(target))
        return _checked(lambda g: model.estimate(g, target).latency_s, proxy, graph,
                        f"roofline({name})")
    return proxy, "proxy"


def _checked(estimate: Callable[[Graph], float], proxy: LatencyFn, graph: Graph,
             name: str) -> tuple[LatencyFn, str]:
    try:
        float(estimate(graph))
    except OptcError as exc:
        log.warning("mixed-precision: %s cannot price the model (%s); ranking assignments "
                    "with the proxy instead", name, exc)
        return proxy, "proxy"
    return (lambda g, _assignment: float(estimate(g))), name


def _seconds(result: Any) -> float:
    return float(getattr(result, "latency_s", result))
