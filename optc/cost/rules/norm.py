"""Normalizations and softmax: a few operations per element, one root per row.

Counted as a fused kernel reading its input once (statistics and normalization in one
pass over a row that stays in cache): mean 1, centre 1, square 1, variance sum 1,
normalize 1, scale 1, shift 1 per element, and one reciprocal square root per
normalized row (a transcendental).
"""

from __future__ import annotations

import math

from optc.cost.work import NodeView, Work

_NORM_PER_ELEMENT = 7  # mean, centre, square, variance sum, normalize, scale, shift


def _rows(view: NodeView, normalized: int) -> int:
    return view.in_numel(0) // max(normalized, 1)


def batch_norm(view: NodeView) -> Work:
    """Inference folds the statistics into a per-channel scale and shift: 2 ops per
    element, 4 per channel; training mode also computes the batch statistics."""
    elements = view.in_numel(0)
    channels = view.in_shape(0)[1] if len(view.in_shape(0)) > 1 else 1
    per_element = 5 if int(view.node.attr("training_mode", 0)) else 2
    return view.work(per_element * elements + 4 * channels, transcendentals=channels,
                     op_class="norm")


def _axis_norm(view: NodeView, per_element: float, default_axis: int = -1) -> Work:
    shape = view.in_shape(0)
    axis = int(view.node.attr("axis", default_axis)) % max(len(shape), 1)
    normalized = math.prod(shape[axis:])
    return view.work(per_element * view.in_numel(0), transcendentals=_rows(view, normalized),
                     op_class="norm")


def layer_norm(view: NodeView) -> Work:
    return _axis_norm(view, _NORM_PER_ELEMENT)


def rms_norm(view: NodeView) -> Work:
    return _axis_norm(view, 4)  # square, sum, normalize, scale


def instance_norm(view: NodeView) -> Work:
    shape = view.in_shape(0)
    return view.work(_NORM_PER_ELEMENT * view.in_numel(0),
                     transcendentals=math.prod(shape[:2]), op_class="norm")


def group_norm(view: NodeView) -> Work:
    groups = int(view.node.attr("num_groups", 1))
    return view.work(_NORM_PER_ELEMENT * view.in_numel(0),
                     transcendentals=view.in_shape(0)[0] * groups, op_class="norm")


def mean_variance_norm(view: NodeView) -> Work:
    shape = view.in_shape(0)
    axes = [int(a) % len(shape) for a in view.node.attr("axes", (0, 2, 3))]
    normalized = math.prod(shape[a] for a in axes)
    return view.work(5 * view.in_numel(0), transcendentals=_rows(view, normalized),
                     op_class="norm")


def lp_norm(view: NodeView) -> Work:
    shape = view.in_shape(0)
    axis = int(view.node.attr("axis", -1)) % len(shape)
    p = int(view.node.attr("p", 2))
    rows = _rows(view, shape[axis])
    return view.work(3 * view.in_numel(0), transcendentals=rows if p == 2 else 0,
                     op_class="norm")


def lrn(view: NodeView) -> Work:
    """Across ``size`` channels: sum of squares, then ``x / (bias + alpha/size * s)^beta``."""
    size = int(view.node.attr("size", 1))
    elements = view.in_numel(0)
    return view.work((2 * size + 3) * elements, transcendentals=elements, op_class="norm")


def softmax(view: NodeView) -> Work:
    """max, subtract, exp, sum, divide per element."""
    elements = view.in_numel(0)
    return view.work(4 * elements, transcendentals=elements, op_class="softmax")


def log_softmax(view: NodeView) -> Work:
    shape = view.in_shape(0)
    axis = int(view.node.attr("axis", -1)) % max(len(shape), 1)
    elements = view.in_numel(0)
    rows = elements // max(shape[axis], 1) if shape else 1
    return view.work(4 * elements, transcendentals=elements + rows, op_class="softmax")


def hardmax(view: NodeView) -> Work:
    return view.work(2 * view.in_numel(0), op_class="softmax")


RULES = {
    "BatchNormalization": batch_norm, "LayerNormalization": layer_norm,
    "RMSNormalization": rms_norm, "InstanceNormalization": instance_norm,
    "GroupNormalization": group_norm, "MeanVarianceNormalization": mean_variance_norm,
    "LpNormalization": lp_norm, "LRN": lrn, "Softmax": softmax, "LogSoftmax": log_softmax,
    "Hardmax": hardmax,
}
