"""Reductions, scans and top-k: operations per input element, a root or log per output."""

from __future__ import annotations

import math

from optc.cost.work import NodeView, Work

# op -> (operations per input element, transcendentals per input, per output)
_REDUCE: dict[str, tuple[float, float, float]] = {
    "ReduceSum": (1, 0, 0), "ReduceMean": (1, 0, 0), "ReduceMax": (1, 0, 0),
    "ReduceMin": (1, 0, 0), "ReduceProd": (1, 0, 0), "ReduceL1": (2, 0, 0),
    "ReduceL2": (2, 0, 1), "ReduceSumSquare": (2, 0, 0), "ReduceLogSum": (1, 0, 1),
    "ReduceLogSumExp": (3, 1, 1), "ArgMax": (1, 0, 0), "ArgMin": (1, 0, 0),
}


def reduce(view: NodeView) -> Work:
    ops, per_input, per_output = _REDUCE[view.node.op]
    inputs, outputs = view.in_numel(0), view.out_numel(0)
    mean = outputs if view.node.op == "ReduceMean" else 0
    # axes given as a tensor input (opset 13/18) are tiny int64 constants: read them too
    return view.work(ops * inputs + mean, per_input * inputs + per_output * outputs,
                     op_class="reduce")


def cumsum(view: NodeView) -> Work:
    return view.work(view.in_numel(0), op_class="reduce")


def topk(view: NodeView) -> Work:
    """A heap of k per row: about log2(k) comparisons per input element."""
    shape = view.in_shape(0)
    axis = int(view.node.attr("axis", -1)) % max(len(shape), 1)
    k = view.out_shape(0)[axis] if shape else 1
    return view.work(view.in_numel(0) * max(1.0, math.log2(max(k, 1))), op_class="reduce")


RULES = {**dict.fromkeys(_REDUCE, reduce), "CumSum": cumsum, "CumProd": cumsum, "TopK": topk}
