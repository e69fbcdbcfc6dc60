"""Contractions: convolutions and matrix products (2 operations per multiply-add).

Counts follow the usual convention (fvcore, the papers' "FLOPs" x 2): a convolution
does ``N x Cout x prod(out spatial) x Cin/groups x prod(kernel)`` multiply-adds
whatever its padding, stride or dilation; bias adds one op per output element.
"""

from __future__ import annotations

import math
import re

from optc.cost.work import NodeView, Work
from optc.errors import UserInputError


def _conv_class(view: NodeView, weight: tuple[int, ...], in_channels: int) -> str:
    """``depthwise`` when every group holds one input channel (MobileNet-style)."""
    group = int(view.node.attr("group", 1))
    return "depthwise" if group > 1 and group == in_channels and weight[1] == 1 else "conv"


def conv_work(view: NodeView, weight_index: int = 1, bias_index: int | None = 2,
              dtype: str | None = None, extra_per_output: float = 0.0) -> Work:
    out = view.out_shape(0)
    weight = view.in_shape(weight_index)
    outputs = math.prod(out)
    macs = outputs * math.prod(weight[1:])  # weight: [Cout, Cin/groups, *kernel]
    bias = outputs if bias_index is not None and view.has_input(bias_index) else 0
    op_class = _conv_class(view, weight, view.in_shape(0)[1])
    return view.work(2 * macs + bias + extra_per_output * outputs, op_class=op_class,
                     dtype=dtype)


def conv(view: NodeView) -> Work:
    return conv_work(view)


def conv_integer(view: NodeView) -> Work:
    # x, w, x_zero_point, w_zero_point: an int8 convolution accumulating in int32
    return conv_work(view, bias_index=None, dtype="int8")


def qlinear_conv(view: NodeView) -> Work:
    # x, x_scale, x_zp, w, w_scale, w_zp, y_scale, y_zp, B; requantizing each output
    # costs a multiply, a round and an add of the zero point.
    return conv_work(view, weight_index=3, bias_index=8, dtype="int8", extra_per_output=3)


def conv_transpose(view: NodeView) -> Work:
    """Each input pixel scatters a ``Cout/groups x kernel`` patch into the output."""
    x = view.in_shape(0)
    weight = view.in_shape(1)  # [Cin, Cout/groups, *kernel]
    macs = math.prod(x) * math.prod(weight[1:])
    bias = view.out_numel(0) if view.has_input(2) else 0
    return view.work(2 * macs + bias, op_class="conv")


def gemm(view: NodeView) -> Work:
    """``alpha * A' B' + beta * C``: M x N x K multiply-adds plus the epilogue."""
    m, n = view.out_shape(0)
    a = view.in_shape(0)
    k = a[0] if view.node.attr("transA", 0) else a[1]
    epilogue = m * n * (int(view.has_input(2)) + int(float(view.node.attr("alpha", 1.0)) != 1))
    return view.work(2 * m * n * k + epilogue, op_class="matmul")


def _matmul_k(view: NodeView, a_index: int) -> int:
    a = view.in_shape(a_index)
    if not a:
        raise UserInputError(f"{view.where}: a scalar operand has no inner dimension")
    return a[-1]


def matmul(view: NodeView) -> Work:
    """Batched and broadcast: every output element is a length-K dot product."""
    return view.work(2 * view.out_numel(0) * _matmul_k(view, 0), op_class="matmul")


def matmul_integer(view: NodeView) -> Work:
    return view.work(2 * view.out_numel(0) * _matmul_k(view, 0), op_class="matmul",
                     dtype="int8")


def qlinear_matmul(view: NodeView) -> Work:
    # a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp
    outputs = view.out_numel(0)
    return view.work(2 * outputs * _matmul_k(view, 0) + 3 * outputs, op_class="matmul",
                     dtype="int8")


def einsum(view: NodeView) -> Work:
    """Naive evaluation: one multiply per operand beyond the first per point of the
    full index space, one add per point (a single operand only sums)."""
    equation = str(view.node.attr("equation", "")).replace(" ", "")
    inputs = [n for n in view.node.inputs if n]
    terms = equation.split("->")[0].split(",")
    if len(terms) != len(inputs):
        raise UserInputError(f"{view.where}: equation {equation!r} names {len(terms)} "
                             f"operands but the node has {len(inputs)}")
    sizes: dict[str, int] = {}
    for term, name in zip(terms, inputs, strict=True):
        shape = view.shape(name)
        letters = re.findall(r"\.\.\.|[a-zA-Z]", term)
        if "..." in letters:  # broadcast dims: name them by their distance from the end
            at = letters.index("...")
            extra = len(shape) - (len(letters) - 1)
            letters[at:at + 1] = [f"...{extra - i}" for i in range(extra)]
        for letter, size in zip(letters, shape, strict=False):
            sizes[letter] = max(sizes.get(letter, 1), size)
    points = math.prod(sizes.values())
    flops = points if len(inputs) == 1 else points * len(inputs)
    return view.work(flops, op_class="matmul")


RULES = {
    "Conv": conv, "ConvInteger": conv_integer, "QLinearConv": qlinear_conv,
    "ConvTranspose": conv_transpose, "Gemm": gemm, "MatMul": matmul,
    "MatMulInteger": matmul_integer, "QLinearMatMul": qlinear_matmul, "Einsum": einsum,
}
