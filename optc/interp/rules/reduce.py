"""Reductions: Reduce* (axes as attribute or input by opset), ArgMax, ArgMin."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from optc.interp.context import Rule, RuleCall
from optc.interp.rules.common import axes, axis, reduced_shape

Reducer = Callable[[torch.Tensor, list[int], bool], torch.Tensor]

REDUCE_SUM_AXES_INPUT_OPSET = 13
REDUCE_AXES_INPUT_OPSET = 18
"""ReduceSum takes axes as an input from opset 13, the other Reduce* ops from 18."""


def _sum(x: torch.Tensor, dims: list[int], keep: bool) -> torch.Tensor:
    # torch widens integer sums to int64; ONNX keeps the input type.
    return torch.sum(x, dim=dims, keepdim=keep).to(x.dtype)


def _prod(x: torch.Tensor, dims: list[int], keep: bool) -> torch.Tensor:
    y = x
    for dim in sorted(dims, reverse=True):  # torch.prod reduces one axis at a time
        y = torch.prod(y, dim=dim, keepdim=keep)
    return y.to(x.dtype)


def _log_sum_exp(x: torch.Tensor, dims: list[int], keep: bool) -> torch.Tensor:
    return torch.logsumexp(x, dim=dims, keepdim=keep)


_REDUCERS: dict[str, tuple[Reducer, float]] = {
    # op: (reducer over non-empty input, value of the reduction over an empty set)
    "ReduceSum": (_sum, 0.0),
    "ReduceMean": (lambda x, d, k: torch.mean(x, dim=d, keepdim=k), math.nan),
    "ReduceMax": (lambda x, d, k: torch.amax(x, dim=d, keepdim=k), -math.inf),
    "ReduceMin": (lambda x, d, k: torch.amin(x, dim=d, keepdim=k), math.inf),
    "ReduceProd": (_prod, 1.0),
    "ReduceL1": (lambda x, d, k: _sum(torch.abs(x), d, k), 0.0),
    "ReduceL2": (lambda x, d, k: torch.sqrt(_sum(x * x, d, k)), 0.0),
    "ReduceSumSquare": (lambda x, d, k: _sum(x * x, d, k), 0.0),
    "ReduceLogSum": (lambda x, d, k: torch.log(_sum(x, d, k)), -math.inf),
    "ReduceLogSumExp": (_log_sum_exp, -math.inf),
}


def _reduce_rule(op: str) -> Rule:
    reducer, empty_value = _REDUCERS[op]
    axes_input_opset = REDUCE_SUM_AXES_INPUT_OPSET if op == "ReduceSum" \
        else REDUCE_AXES_INPUT_OPSET

    def rule(call: RuleCall) -> list[torch.Tensor]:
        x = call.x(0)
        keep = bool(call.attr("keepdims", 1))
        found = call.ints(1) if call.opset >= axes_input_opset else call.attr("axes")
        if not found:
            if call.attr("noop_with_empty_axes", 0):
                return [x]
            found = range(x.dim())
        dims = sorted(set(axes(found, x.dim())))
        if x.dim() == 0:
            return [reducer(x, [], keep)]
        if x.numel() == 0:
            return [_empty_reduction(x, dims, keep, empty_value)]
        return [reducer(x, dims, keep)]

    return rule


def _empty_reduction(x: torch.Tensor, dims: list[int], keep: bool,
                     value: float) -> torch.Tensor:
    shape = reduced_shape(x.shape, dims, keep)
    if x.dtype == torch.bool:
        return torch.full(shape, value > 0, dtype=torch.bool)
    if not x.is_floating_point() and math.isinf(value):
        info = torch.iinfo(x.dtype)
        value = info.min if value < 0 else info.max
    return torch.full(shape, value, dtype=x.dtype)


def _arg_rule(fn: Callable[..., torch.Tensor]) -> Rule:
    def rule(call: RuleCall) -> list[torch.Tensor]:
        x = call.x(0)
        dim = axis(int(call.attr("axis", 0)), x.dim())
        keep = bool(call.attr("keepdims", 1))
        if call.attr("select_last_index", 0):
            # torch returns the first extremum; on the flipped axis that is the last one.
            flipped = fn(x.flip(dim), dim=dim, keepdim=keep)
            return [x.shape[dim] - 1 - flipped]
        return [fn(x, dim=dim, keepdim=keep)]

    return rule


RULES: dict[str, Rule] = {op: _reduce_rule(op) for op in _REDUCERS}
RULES["ArgMax"] = _arg_rule(torch.argmax)
RULES["ArgMin"] = _arg_rule(torch.argmin)
