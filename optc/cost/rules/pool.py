"""Pooling: one operation per window element per output (plus a divide or a root)."""

from __future__ import annotations

import math

from optc.cost.work import NodeView, Work


def _window(view: NodeView) -> int:
    return math.prod(int(k) for k in view.node.attr("kernel_shape", ()))


def max_pool(view: NodeView) -> Work:
    # the optional second output (argmax indices, int64) is written when it is named
    return view.work(view.out_numel(0) * _window(view), op_class="pool")


def average_pool(view: NodeView) -> Work:
    outputs = view.out_numel(0)
    return view.work(outputs * _window(view) + outputs, op_class="pool")


def lp_pool(view: NodeView) -> Work:
    """``(sum |x|^p)^(1/p)``: p = 1 and 2 need no transcendental per element."""
    outputs = view.out_numel(0)
    return _lp(view, outputs * _window(view), outputs)


def _lp(view: NodeView, terms: int, outputs: int) -> Work:
    p = int(view.node.attr("p", 2))
    if p in (1, 2):
        return view.work(2 * terms, transcendentals=outputs if p == 2 else 0, op_class="pool")
    return view.work(terms, transcendentals=terms + outputs, op_class="pool")


def global_average_pool(view: NodeView) -> Work:
    return view.work(view.in_numel(0) + view.out_numel(0), op_class="pool")


def global_max_pool(view: NodeView) -> Work:
    return view.work(view.in_numel(0), op_class="pool")


def global_lp_pool(view: NodeView) -> Work:
    return _lp(view, view.in_numel(0), view.out_numel(0))


RULES = {
    "MaxPool": max_pool, "AveragePool": average_pool, "LpPool": lp_pool,
    "GlobalAveragePool": global_average_pool, "GlobalMaxPool": global_max_pool,
    "GlobalLpPool": global_lp_pool,
}
