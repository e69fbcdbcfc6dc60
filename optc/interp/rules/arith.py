"""Binary and variadic arithmetic: Add, Sub, Mul, Div, Pow, Mod, Sum, Mean, Max, Min, ..."""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

from optc.interp.context import Rule, RuleCall
from optc.interp.rules.common import binary, is_float, legacy_operands, widen_unsigned


def _div(call: RuleCall) -> list[torch.Tensor]:
    a, b = legacy_operands(call)
    if is_float(a):
        return [a / b]
    # ONNX integer division truncates toward zero, like C (and onnxruntime).
    return [torch.div(a, b, rounding_mode="trunc")]


def _pow(call: RuleCall) -> list[torch.Tensor]:
    base, exponent = legacy_operands(call)
    if is_float(base):
        # The exponent may be of another type (int or float of any width); the result
        # always has the base's type, so compute in the base's type.
        if exponent.dim() == 0 and not exponent.requires_grad:
            return [torch.pow(base, exponent.to(base.dtype).item())]
        return [torch.pow(base, exponent.to(base.dtype))]
    if is_float(exponent):
        result = torch.pow(base.to(torch.float64), exponent.to(torch.float64))
        return [result.to(base.dtype)]
    return [torch.pow(base, exponent.to(base.dtype))]


def _mod(call: RuleCall) -> list[torch.Tensor]:
    a, b = legacy_operands(call)
    if call.attr("fmod", 0):
        return [torch.fmod(a, b)]  # the sign of the dividend, as C's fmod
    return [torch.remainder(a, b)]  # the sign of the divisor, as Python's %


def _bit_shift(call: RuleCall) -> list[torch.Tensor]:
    a, b = call.x(0), call.x(1)
    if call.attr("direction") == "LEFT":
        return [torch.bitwise_left_shift(a, b)]
    return [torch.bitwise_right_shift(a, b)]


def _variadic(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Rule:
    """A rule folding ``fn`` over all inputs, broadcasting as it goes."""

    def rule(call: RuleCall) -> list[torch.Tensor]:
        tensors = [t for t in call.inputs if t is not None]
        return [functools.reduce(fn, tensors)]

    return rule


def _mean(call: RuleCall) -> list[torch.Tensor]:
    tensors = [t for t in call.inputs if t is not None]
    return [functools.reduce(torch.add, tensors) / len(tensors)]


_RULES: dict[str, Rule] = {
    "Add": binary(torch.add),
    "Sub": binary(torch.sub),
    "Mul": binary(torch.mul),
    "Div": _div,
    "Pow": _pow,
    "Mod": _mod,
    "BitShift": _bit_shift,
    "Sum": _variadic(torch.add),
    "Max": _variadic(torch.maximum),
    "Min": _variadic(torch.minimum),
    "Mean": _mean,
}
RULES: dict[str, Rule] = {op: widen_unsigned(rule) for op, rule in _RULES.items()}
