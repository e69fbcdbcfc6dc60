"""Mixed-precision post-training quantization (the ``mixed-precision`` pass's machinery).

- ``calibration``: load and validate ``--calib FILE.npz``, or a synthetic fallback;
- ``layers``: which Conv / Gemm / MatMul nodes can be quantized, and their neighbors;
- ``numerics``: layer precisions (fp32, fp16, w8a8, w4a16...) and the quantizers;
- ``evaluate`` / ``batching``: run variants on calibration data, loss, accuracy, fidelity;
- ``sensitivity``: Hutchinson Hessian traces and inter-layer dependency terms;
- ``search``: bisection over the sensitivity order; ``latency``: pluggable latency;
- ``emit``: the assignment as QDQ / Cast ops in the IR; ``report``: what was decided;
- ``plan``: ``quantize_mixed(graph, ctx, Options(...)) -> (graph, Report)``.
"""

from optc.quant.calibration import (
    LABELS,
    Calibration,
    calibration_from_mapping,
    load_calibration,
    synthetic_calibration,
)
from optc.quant.numerics import FP16, FP32, LayerPrecision, precision_for
from optc.quant.plan import Options, quantize_mixed
from optc.quant.report import REPORT_KEY, LayerReport, Report

__all__ = [
    "FP16", "FP32", "LABELS", "REPORT_KEY", "Calibration", "LayerPrecision", "LayerReport",
    "Options", "Report", "calibration_from_mapping", "load_calibration", "precision_for",
    "quantize_mixed", "synthetic_calibration",
]
