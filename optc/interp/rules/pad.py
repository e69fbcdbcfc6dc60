"""Pad: constant, reflect, edge and wrap modes, negative pads, optional axes."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from optc.interp.context import Rule, RuleCall
from optc.interp.rules.common import axes

PAD_AS_INPUTS_OPSET = 11
"""Before opset 11 ``pads`` and ``value`` are attributes; from 11 they are inputs."""


def _pad(call: RuleCall) -> list[torch.Tensor]:
    x = call.x(0)
    rank = x.dim()
    if call.opset >= PAD_AS_INPUTS_OPSET:
        pads, value, dims = call.ints(1) or [], call.scalar(2), call.ints(3)
    else:
        pads = list(call.attr("pads", call.attr("paddings", ())))
        value, dims = call.attr("value", 0.0), None
    dims = list(range(rank)) if dims is None else axes(dims, rank)
    begins, ends = [0] * rank, [0] * rank
    for i, dim in enumerate(dims):
        begins[dim], ends[dim] = pads[i], pads[len(dims) + i]
    mode = call.attr("mode", "constant")
    if mode == "constant":
        flat: list[int] = []
        for dim in reversed(range(rank)):
            flat += [begins[dim], ends[dim]]
        return [F.pad(x, flat, mode="constant", value=float(value or 0))]
    y = x
    for dim in range(rank):
        if begins[dim] or ends[dim]:
            index = _source_index(mode, y.shape[dim], begins[dim], ends[dim])
            y = y.index_select(dim, index)
    return [y]


def _source_index(mode: str, size: int, begin: int, end: int) -> torch.Tensor:
    """For each output position along one axis, the input position it copies."""
    positions = torch.arange(-begin, size + end)
    if mode == "edge":
        return positions.clamp(0, size - 1)
    if mode == "wrap":
        return positions.remainder(size)
    if size == 1:  # reflect
        return torch.zeros_like(positions)
    period = 2 * (size - 1)
    folded = positions.remainder(period)
    return torch.where(folded >= size, period - folded, folded)


RULES: dict[str, Rule] = {"Pad": _pad}
