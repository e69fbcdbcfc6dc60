"""Helpers shared by the rule modules: axes, legacy broadcasting, dtype classes."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import torch

from optc.interp.context import Rule, RuleCall

LEGACY_BROADCAST_OPSET = 7
"""Before opset 7, binary ops broadcast only when asked (``broadcast=1``), aligning the
second operand at ``axis`` instead of at the trailing dimensions."""


def axis(value: int, rank: int) -> int:
    """A non-negative axis; ONNX allows -rank..rank-1."""
    return value + rank if value < 0 else value


def axes(values: Sequence[int], rank: int) -> list[int]:
    return [axis(int(v), rank) for v in values]


def is_float(tensor: torch.Tensor) -> bool:
    return tensor.is_floating_point() or tensor.is_complex()


def legacy_operands(call: RuleCall) -> tuple[torch.Tensor, torch.Tensor]:
    """The two operands of a binary op, with pre-opset-7 ``broadcast``/``axis`` applied."""
    a, b = call.x(0), call.x(1)
    if call.opset < LEGACY_BROADCAST_OPSET and call.attr("broadcast", 0) and \
            call.attr("axis") is not None:
        start = axis(int(call.attr("axis")), a.dim())
        trailing = a.dim() - start - b.dim()
        if trailing > 0:
            b = b.reshape(tuple(b.shape) + (1,) * trailing)
    return a, b


def unary(fn: Callable[[torch.Tensor], torch.Tensor]) -> Rule:
    """Wrap a one-argument torch function as a rule."""

    def rule(call: RuleCall) -> list[torch.Tensor]:
        return [fn(call.x(0))]

    return rule


def binary(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Rule:
    """Wrap a two-argument torch function as a rule (legacy broadcasting applied)."""

    def rule(call: RuleCall) -> list[torch.Tensor]:
        a, b = legacy_operands(call)
        return [fn(a, b)]

    return rule


_WIDE_UNSIGNED = (torch.uint16, torch.uint32, torch.uint64)


def widen_unsigned(rule: Rule) -> Rule:
    """Run ``rule`` on uint16/32/64 inputs by way of int64.

    torch implements little arithmetic for these types; int64 holds uint16/uint32
    exactly (uint64 above 2**63 wraps) and integer results are cast back.
    """

    def widened(call: RuleCall) -> Sequence[torch.Tensor | None]:
        original = next((t.dtype for t in call.inputs
                         if t is not None and t.dtype in _WIDE_UNSIGNED), None)
        if original is None:
            return rule(call)
        inputs = [t.to(torch.int64) if t is not None and t.dtype in _WIDE_UNSIGNED else t
                  for t in call.inputs]
        results = rule(dataclasses.replace(call, inputs=inputs))
        return [t.to(original) if t is not None and t.dtype == torch.int64 else t
                for t in results]

    return widened


def reduced_shape(shape: Sequence[int], dims: Sequence[int], keepdims: bool) -> list[int]:
    if keepdims:
        return [1 if i in dims else d for i, d in enumerate(shape)]
    return [d for i, d in enumerate(shape) if i not in dims]
