"""Selection and scans: TopK, NonZero, CumSum, Trilu, OneHot, Compress."""

from __future__ import annotations

from collections.abc import Callable

import torch

from optc.interp.context import Rule, RuleCall
from optc.interp.rules.common import axis

TOPK_K_INPUT_OPSET = 10


def _top_k(call: RuleCall) -> list[torch.Tensor]:
    x = call.x(0)
    k = call.int_scalar(1) if call.opset >= TOPK_K_INPUT_OPSET else int(call.attr("k"))
    dim = axis(int(call.attr("axis", -1)), x.dim())
    largest = bool(call.attr("largest", 1))
    # A stable sort keeps the lower index first among equal values, as ONNX requires
    # (torch.topk makes no such promise).
    values, indices = torch.sort(x, dim=dim, descending=largest, stable=True)
    return [values.narrow(dim, 0, k), indices.narrow(dim, 0, k)]


def _non_zero(call: RuleCall) -> list[torch.Tensor]:
    x = call.x(0)
    if x.dim() == 0:
        return [torch.zeros((0, int(bool(x.item()))), dtype=torch.int64)]
    return [torch.nonzero(x).t().contiguous()]


def _scan_rule(scan: Callable[..., torch.Tensor], identity: float) -> Rule:
    """CumSum / CumProd: inclusive or exclusive, forward or reverse, along one axis."""

    def rule(call: RuleCall) -> list[torch.Tensor]:
        x = call.x(0)
        dim = axis(call.int_scalar(1), x.dim())
        reverse, exclusive = bool(call.attr("reverse", 0)), bool(call.attr("exclusive", 0))
        y = x.flip(dim) if reverse else x
        result = scan(y, dim=dim, dtype=x.dtype)
        if exclusive and x.shape[dim]:
            # Shift by one (a leading identity) rather than undo x: exact for floats too.
            first = torch.full_like(result.narrow(dim, 0, 1), identity)
            result = torch.cat([first, result.narrow(dim, 0, result.shape[dim] - 1)], dim=dim)
        return [result.flip(dim) if reverse else result]

    return rule


def _trilu(call: RuleCall) -> list[torch.Tensor]:
    x = call.x(0)
    k = int(call.scalar(1) or 0)
    return [torch.triu(x, k) if call.attr("upper", 1) else torch.tril(x, k)]


def _one_hot(call: RuleCall) -> list[torch.Tensor]:
    indices, values = call.x(0), call.x(2)
    depth = call.int_scalar(1)
    idx = indices.to(torch.int64)
    idx = torch.where(idx < 0, idx + depth, idx)
    hot = idx.unsqueeze(-1) == torch.arange(depth)
    y = torch.where(hot, values[1], values[0])
    return [y.movedim(-1, axis(int(call.attr("axis", -1)), indices.dim() + 1))]


def _compress(call: RuleCall) -> list[torch.Tensor]:
    x, condition = call.x(0), call.x(1).to(torch.bool)
    dim = call.attr("axis")
    if dim is None:
        x, dim = x.reshape(-1), 0
    dim = axis(int(dim), x.dim())
    keep = torch.nonzero(condition[: x.shape[dim]]).reshape(-1)
    return [x.index_select(dim, keep)]


RULES: dict[str, Rule] = {
    "TopK": _top_k,
    "NonZero": _non_zero,
    "CumSum": _scan_rule(torch.cumsum, 0.0),
    "CumProd": _scan_rule(torch.cumprod, 1.0),
    "Trilu": _trilu,
    "OneHot": _one_hot,
    "Compress": _compress,
}
