"""Comparisons, boolean and bitwise logic, NaN/Inf tests, Where."""

from __future__ import annotations

import torch

from optc.interp.context import Rule, RuleCall
from optc.interp.rules.common import binary, unary, widen_unsigned


def _is_inf(call: RuleCall) -> list[torch.Tensor]:
    x = call.x(0)
    positive = bool(call.attr("detect_positive", 1))
    negative = bool(call.attr("detect_negative", 1))
    if positive and negative:
        return [torch.isinf(x)]
    if positive:
        return [torch.isposinf(x)]
    if negative:
        return [torch.isneginf(x)]
    return [torch.zeros_like(x, dtype=torch.bool)]


def _where(call: RuleCall) -> list[torch.Tensor]:
    condition, a, b = call.x(0), call.x(1), call.x(2)
    return [torch.where(condition.to(torch.bool), a, b)]


RULES: dict[str, Rule] = {
    "Equal": widen_unsigned(binary(torch.eq)),
    "Greater": widen_unsigned(binary(torch.gt)),
    "Less": widen_unsigned(binary(torch.lt)),
    "GreaterOrEqual": widen_unsigned(binary(torch.ge)),
    "LessOrEqual": widen_unsigned(binary(torch.le)),
    "And": binary(torch.logical_and),
    "Or": binary(torch.logical_or),
    "Xor": binary(torch.logical_xor),
    "Not": unary(torch.logical_not),
    "BitwiseAnd": widen_unsigned(binary(torch.bitwise_and)),
    "BitwiseOr": widen_unsigned(binary(torch.bitwise_or)),
    "BitwiseXor": widen_unsigned(binary(torch.bitwise_xor)),
    "BitwiseNot": widen_unsigned(unary(torch.bitwise_not)),
    "IsNaN": unary(torch.isnan),
    "IsInf": _is_inf,
    "Where": _where,
}
