"""Shape manipulation: Reshape, Flatten, Transpose, (Un)Squeeze, Shape, Expand, Tile, ..."""

from __future__ import annotations

import math

import torch

from optc.interp.context import Rule, RuleCall
from optc.interp.rules.common import axes, axis

AXES_AS_INPUT_OPSET = 13
"""Squeeze and Unsqueeze take ``axes`` as an input from opset 13 (an attribute before)."""


def _reshape(call: RuleCall) -> list[torch.Tensor]:
    x = call.x(0)
    shape = call.ints(1) if call.opset >= 5 else list(call.attr("shape", ()))
    if shape is None:
        raise call.fail("the target shape is missing")
    if not call.attr("allowzero", 0):
        # 0 copies the input's dimension at the same position (unless allowzero=1).
        shape = [x.shape[i] if d == 0 else d for i, d in enumerate(shape)]
    return [torch.reshape(x, shape)]


def _flatten(call: RuleCall) -> list[torch.Tensor]:
    x = call.x(0)
    start = axis(int(call.attr("axis", 1)), x.dim())
    # Products computed explicitly: reshape(rows, -1) cannot infer -1 for empty tensors.
    return [x.reshape(math.prod(x.shape[:start]), math.prod(x.shape[start:]))]


def _transpose(call: RuleCall) -> list[torch.Tensor]:
    x = call.x(0)
    perm = call.attr("perm") or tuple(reversed(range(x.dim())))
    return [x.permute(*perm)]


def _axes_argument(call: RuleCall) -> list[int] | None:
    if call.opset >= AXES_AS_INPUT_OPSET:
        return call.ints(1)
    found = call.attr("axes")
    return None if found is None else list(found)


def _squeeze(call: RuleCall) -> list[torch.Tensor]:
    x = call.x(0)
    dims = _axes_argument(call)
    if dims is None:
        return [x.reshape([d for d in x.shape if d != 1])]
    dims = axes(dims, x.dim())
    return [x.reshape([d for i, d in enumerate(x.shape) if i not in dims])]


def _unsqueeze(call: RuleCall) -> list[torch.Tensor]:
    x = call.x(0)
    dims = _axes_argument(call)
    if dims is None:
        raise call.fail("axes are missing")
    rank = x.dim() + len(dims)
    shape = list(x.shape)
    for dim in sorted(axes(dims, rank)):
        shape.insert(dim, 1)
    return [x.reshape(shape)]


def _shape(call: RuleCall) -> list[torch.Tensor]:
    x = call.x(0)
    start, end = call.attr("start", 0), call.attr("end")
    dims = list(x.shape)[start:end]
    return [torch.tensor(dims, dtype=torch.int64)]


def _size(call: RuleCall) -> list[torch.Tensor]:
    return [torch.tensor(call.x(0).numel(), dtype=torch.int64)]


def _expand(call: RuleCall) -> list[torch.Tensor]:
    x, shape = call.x(0), call.ints(1)
    # ONNX Expand broadcasts both ways: a 1 in ``shape`` keeps the input's dimension.
    return [x.expand(torch.broadcast_shapes(tuple(x.shape), tuple(shape or ())))]


def _tile(call: RuleCall) -> list[torch.Tensor]:
    return [call.x(0).repeat(call.ints(1) or [])]


def _depth_to_space(call: RuleCall) -> list[torch.Tensor]:
    x = call.x(0)
    b = int(call.attr("blocksize"))
    n, c, h, w = x.shape
    if call.attr("mode", "DCR") == "CRD":
        y = x.reshape(n, c // (b * b), b, b, h, w).permute(0, 1, 4, 2, 5, 3)
    else:
        y = x.reshape(n, b, b, c // (b * b), h, w).permute(0, 3, 4, 1, 5, 2)
    return [y.reshape(n, c // (b * b), h * b, w * b)]


def _space_to_depth(call: RuleCall) -> list[torch.Tensor]:
    x = call.x(0)
    b = int(call.attr("blocksize"))
    n, c, h, w = x.shape
    y = x.reshape(n, c, h // b, b, w // b, b)
    if call.attr("mode", "DCR") == "CRD":  # channel-major output channels (opset 25)
        y = y.permute(0, 1, 3, 5, 2, 4)
    else:
        y = y.permute(0, 3, 5, 1, 2, 4)
    return [y.reshape(n, c * b * b, h // b, w // b)]


RULES: dict[str, Rule] = {
    "Reshape": _reshape,
    "Flatten": _flatten,
    "Transpose": _transpose,
    "Squeeze": _squeeze,
    "Unsqueeze": _unsqueeze,
    "Shape": _shape,
    "Size": _size,
    "Expand": _expand,
    "Tile": _tile,
    "DepthToSpace": _depth_to_space,
    "SpaceToDepth": _space_to_depth,
}
