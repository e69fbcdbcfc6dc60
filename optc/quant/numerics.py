"""Precisions a layer can take and the quantizers that realise them (numpy).

Weights are quantized per output channel, symmetric (zero point 0), to the signed
range ``[-(2**(b-1) - 1), 2**(b-1) - 1]``: 8 bits -> [-127, 127], 4 bits -> [-7, 7].
On targets whose int8 kernel is AVX2 ``vpmaddubsw`` (x86 without AVX-512 VNNI), "8-bit"
weights get 7-bit codes, [-63, 63] (``code_bits``; ``optc.quant.kernels`` says why):
still int8 QDQ, labelled ``w7a8`` in reports. There, 6-bit weights (``w6a8``, codes in
[-31, 31]) run on a faster kernel (``optc.codegen.schedules.vnni.PMADDUBSW_PAIRS``), a
step the search may take below ``w7a8`` (``optc.quant.plan``); they exist only with
8-bit activations (a float16 layer reading 6-bit codes would be no faster than 8-bit).
The scale of each channel is chosen from a grid of clipping ratios to minimise the
squared error (plain max-abs scaling wastes most of a 4-bit grid on one outlier).
Activations are quantized per tensor, asymmetric uint8 from the calibration min/max
(the MinMax calibration of onnxruntime's ``quantize_static``), the range widened to
contain 0 so that zero (padding, ReLU) is exact.

Outlier channels of a matmul's input (transformers: MiniLM-L6's layer-0 FFN input has
one channel reaching 24.7 where 99 % of them stay under 4.2) would make that per-tensor
grid coarse for every other channel. ``outlier_smoothing`` gives per-channel divisors
that bring such channels down to the 99th percentile; the activation is divided by them
before it is quantized and the weight rows multiplied by them (SmoothQuant's migration,
Xiao et al., 2023, applied to the outliers only), which is the same product in exact
arithmetic (``optc.quant.emit``).
"""

from __future__ import annotations

import dataclasses

import numpy as np

WEIGHT_BITS = (4, 6, 8, 16, 32)
ACT_BITS = (8, 16)
CLIP_RATIOS = np.linspace(1.0, 0.5, 21)
"""Fractions of a channel's max |w| tried as its clipping range."""
UINT8_MAX = 255
SMOOTH_PERCENTILE = 99.0
"""Channels of a matmul input above this percentile of the per-channel peaks are scaled
down to it (``outlier_smoothing``)."""
SMOOTH_MIN_RATIO = 2.0
"""... when the largest peak is at least this multiple of the percentile (below that the
per-tensor grid would get less than 2x finer: not worth a multiply)."""


@dataclasses.dataclass(frozen=True, order=True)
class LayerPrecision:
    """Bits of a layer's weights (4, 6, 8: integer; 16, 32: float) and of its input activation.

    ``act_bits`` 8: the activation is quantized to uint8 (QDQ); 16: it runs in float16,
    or bfloat16 where the target runs that natively (``optc.quant.kernels.half_dtype``;
    one type per run, not per layer); 32: float32. Integer weights go with 8- or 16-bit
    activations, 16-bit float weights with 16, float32 with 32; 6-bit weights with 8 only.
    """

    weight_bits: int
    act_bits: int

    def __post_init__(self) -> None:
        allowed = {4: ACT_BITS, 6: (8,), 8: ACT_BITS, 16: (16,), 32: (32,)}
        if self.act_bits not in allowed.get(self.weight_bits, ()):
            raise ValueError(f"unsupported precision W{self.weight_bits}A{self.act_bits}")

    @property
    def integer_weights(self) -> bool:
        return self.weight_bits <= 8

    @property
    def label(self) -> str:
        if self.weight_bits == 32:
            return "fp32"
        if self.weight_bits == 16:
            return "fp16"
        return f"w{self.weight_bits}a{self.act_bits}"


FP32 = LayerPrecision(32, 32)
FP16 = LayerPrecision(16, 16)


def precision_for(bits: int, act_bits: int) -> LayerPrecision:
    """The precision of the bit-width ladder step ``bits`` (integer steps use ``act_bits``)."""
    if bits == 32:
        return FP32
    if bits == 16:
        return FP16
    return LayerPrecision(bits, act_bits)


def code_bits(precision: LayerPrecision, int8_code_bits: int = 8) -> int:
    """Bits of the integer codes a precision's weights are quantized to: ``int8_code_bits``
    (7 where optc's int8 kernel is AVX2 ``vpmaddubsw``, ``optc.quant.kernels``) for 8-bit
    weights, else the weight bits."""
    return int8_code_bits if precision.weight_bits == 8 else precision.weight_bits


def code_label(precision: LayerPrecision, int8_code_bits: int = 8,
               half_dtype: str = "float16") -> str:
    """``precision.label`` with the code bits and float type really used: ``w7a8`` for
    7-bit int8 codes, ``bf16`` for 16-bit float layers emitted in bfloat16."""
    if precision.weight_bits == 16 and half_dtype == "bfloat16":
        return "bf16"
    if precision.weight_bits == 8 and int8_code_bits != 8:
        return f"w{int8_code_bits}a{precision.act_bits}"
    return precision.label


def weight_qmax(bits: int) -> int:
    return (1 << (bits - 1)) - 1


def quantize_weight(weight: np.ndarray, bits: int, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """``(q, scale)``: int8 codes in the ``bits`` range and float32 per-channel scales,
    with ``weight ~= q * scale`` along ``axis``."""
    qmax = weight_qmax(bits)
    w = np.moveaxis(np.asarray(weight, dtype=np.float32), axis, 0)
    rows = w.reshape(w.shape[0], -1)
    peak = np.abs(rows).max(axis=1)
    best_scale = np.where(peak > 0, peak / qmax, 1.0).astype(np.float32)
    best_error = np.full(rows.shape[0], np.inf)
    for ratio in CLIP_RATIOS:
        scale = np.where(peak > 0, peak * ratio / qmax, 1.0).astype(np.float32)
        codes = np.clip(np.round(rows / scale[:, None]), -qmax, qmax)
        error = ((codes * scale[:, None] - rows) ** 2).sum(axis=1)
        better = error < best_error
        best_error = np.where(better, error, best_error)
        best_scale = np.where(better, scale, best_scale)
    codes = np.clip(np.round(rows / best_scale[:, None]), -qmax, qmax).astype(np.int8)
    q = np.moveaxis(codes.reshape(w.shape), 0, axis)
    return np.ascontiguousarray(q), best_scale


def dequantize_weight(q: np.ndarray, scale: np.ndarray, axis: int) -> np.ndarray:
    shape = [1] * q.ndim
    shape[axis] = -1
    return (q.astype(np.float32) * scale.reshape(shape)).astype(np.float32)


def half_numpy_dtype(half_dtype: str) -> np.dtype:
    """The numpy dtype of a 16-bit float type: ``float16`` or ml_dtypes' ``bfloat16``."""
    if half_dtype == "bfloat16":
        import ml_dtypes  # onnx's dependency; as in optc.ir.text_parse, imported on use

        return np.dtype(ml_dtypes.bfloat16)
    if half_dtype == "float16":
        return np.dtype(np.float16)
    raise ValueError(f"half_dtype must be float16 or bfloat16, not {half_dtype!r}")


def rounded_weight(weight: np.ndarray, precision: LayerPrecision, axis: int,
                   int8_code_bits: int = 8, half_dtype: str = "float16") -> np.ndarray:
    """The weight as the precision stores it, back in float32 (for error measures);
    16-bit float weights in ``half_dtype``."""
    if precision.weight_bits == 32:
        return np.asarray(weight, dtype=np.float32)
    if precision.weight_bits == 16:
        return np.asarray(weight, dtype=np.float32).astype(
            half_numpy_dtype(half_dtype)).astype(np.float32)
    q, scale = quantize_weight(weight, code_bits(precision, int8_code_bits), axis)
    return dequantize_weight(q, scale, axis)


def weight_error(weight: np.ndarray, precision: LayerPrecision, axis: int,
                 int8_code_bits: int = 8, half_dtype: str = "float16") -> float:
    """``||Q(W) - W||^2``: the perturbation the Hessian trace is weighted with."""
    delta = rounded_weight(weight, precision, axis, int8_code_bits,
                           half_dtype).astype(np.float64) - weight
    return float((delta ** 2).sum())


def activation_qparams(low: float, high: float) -> tuple[np.ndarray, np.ndarray]:
    """``(scale, zero_point)`` of uint8 asymmetric quantization over ``[low, high]``."""
    low, high = min(float(low), 0.0), max(float(high), 0.0)
    scale = (high - low) / UINT8_MAX if high > low else 1.0
    zero = int(np.clip(np.round(-low / scale), 0, UINT8_MAX))
    return np.array(scale, dtype=np.float32), np.array(zero, dtype=np.uint8)


def outlier_smoothing(low: np.ndarray, high: np.ndarray,
                      percentile: float = SMOOTH_PERCENTILE,
                      min_ratio: float = SMOOTH_MIN_RATIO) -> np.ndarray | None:
    """Per-channel divisors ``m >= 1`` (float32) for an activation whose channel ``c``
    spans ``[low[c], high[c]]`` on the calibration data, or None when no channel stands
    out. ``m[c] = peak[c] / p`` above ``p``, the ``percentile`` of the peaks ``|x_c|``,
    else 1: ``x / m`` has every channel within ``p``, and ``(x / m) @ (m * W)`` is
    ``x @ W``. MiniLM-L6 all-w7a8 (eight sentences, real tokens): 0.9962 cosine with
    this, 0.9902 without. Only the outliers move: SmoothQuant's balance of every channel
    against the weight (``m = peak^a / wpeak^(1-a)``, a = 0.5) on its six FFN output
    inputs did worse than this on them (0.972 against 0.992 cosine, all tokens)."""
    peak = np.maximum(np.abs(np.asarray(low, np.float64)), np.abs(np.asarray(high, np.float64)))
    if peak.size < 2:
        return None
    limit = float(np.percentile(peak, percentile))
    if limit <= 0 or float(peak.max()) < min_ratio * limit:
        return None
    return np.maximum(peak / limit, 1.0).astype(np.float32)


def smoothed_range(low: np.ndarray, high: np.ndarray,
                   divisors: np.ndarray | None) -> tuple[float, float]:
    """The per-tensor range of an activation (channel ranges ``low``, ``high``) after
    dividing channel ``c`` by ``divisors[c]`` (None: as is)."""
    if divisors is None:
        return float(np.min(low)), float(np.max(high))
    return float(np.min(low / divisors)), float(np.max(high / divisors))
