"""Quantization: affine conversions between float and narrow integer tensors.

QuantizeLinear computes in its *output* type and DequantizeLinear in its *input*
type, as an integer accelerator sees them: both belong to the quantized region.
"""

from __future__ import annotations

from optc.cost.work import NodeView, Work


def quantize(view: NodeView) -> Work:
    # scale, round, add the zero point, saturate
    return view.work(4 * view.out_numel(0), dtype=view.dtype(view.output(0)))


def dequantize(view: NodeView) -> Work:
    # subtract the zero point, scale
    return view.work(2 * view.out_numel(0), dtype=view.dtype(view.input(0)))


def dynamic_quantize(view: NodeView) -> Work:
    """A min/max reduction over the input, then quantization: the input is read twice."""
    elements = view.in_numel(0)
    reads = view.reads()
    x, x_bytes = reads[0]
    return view.work(6 * elements, op_class="reduce", reads=((x, 2 * x_bytes), *reads[1:]))


RULES = {"QuantizeLinear": quantize, "DequantizeLinear": dequantize,
         "DynamicQuantizeLinear": dynamic_quantize}
