"""Indexing: Concat, Split, Slice, Gather*, Scatter*."""

from __future__ import annotations

import math

import torch

from optc.interp.context import Rule, RuleCall
from optc.interp.rules.common import axis

SPLIT_AS_INPUT_OPSET = 13
SLICE_AS_INPUTS_OPSET = 10
_REDUCE = {"mul": "prod", "max": "amax", "min": "amin", "add": "sum"}


def _concat(call: RuleCall) -> list[torch.Tensor]:
    tensors = [t for t in call.inputs if t is not None]
    return [torch.cat(tensors, dim=axis(int(call.attr("axis", 0)), tensors[0].dim()))]


def _split(call: RuleCall) -> list[torch.Tensor]:
    x = call.x(0)
    dim = axis(int(call.attr("axis", 0)), x.dim())
    sizes = call.ints(1) if call.opset >= SPLIT_AS_INPUT_OPSET else call.attr("split")
    if not sizes:
        parts = int(call.attr("num_outputs", call.n_outputs))
        # Uneven splits (opset 18 num_outputs) give the remainder to the last chunk.
        chunk = math.ceil(x.shape[dim] / parts)
        sizes = [chunk] * (parts - 1) + [x.shape[dim] - chunk * (parts - 1)]
    return list(torch.split(x, list(sizes), dim=dim))


def _slice(call: RuleCall) -> list[torch.Tensor]:
    x = call.x(0)
    if call.opset >= SLICE_AS_INPUTS_OPSET:
        starts, ends, dims, steps = call.ints(1), call.ints(2), call.ints(3), call.ints(4)
    else:
        starts, ends, dims = list(call.attr("starts")), list(call.attr("ends")), call.attr("axes")
        steps = None
    if starts is None or ends is None:
        raise call.fail("starts and ends are required")
    dims = list(range(len(starts))) if dims is None else [axis(d, x.dim()) for d in dims]
    steps = steps or [1] * len(starts)
    index: list[slice] = [slice(None)] * x.dim()
    reversed_axes: list[tuple[int, range]] = []
    for start, end, dim, step in zip(starts, ends, dims, steps, strict=True):
        # Python's slice.indices clamps exactly as ONNX does, for both step signs.
        picked = range(*slice(start, end, step).indices(x.shape[dim]))
        if step > 0 or len(picked) == 0:
            index[dim] = slice(picked.start, picked.start + len(picked) * step, step) \
                if len(picked) else slice(0, 0)
        else:
            reversed_axes.append((dim, picked))
    y = x[tuple(index)]
    for dim, picked in reversed_axes:  # torch slicing has no negative steps
        y = y.index_select(dim, torch.arange(picked.start, picked.stop, picked.step))
    return [y]


def _positive(indices: torch.Tensor, size: int | torch.Tensor) -> torch.Tensor:
    indices = indices.to(torch.int64)
    return torch.where(indices < 0, indices + size, indices)


def _gather(call: RuleCall) -> list[torch.Tensor]:
    x, indices = call.x(0), call.x(1)
    dim = axis(int(call.attr("axis", 0)), x.dim())
    flat = _positive(indices, x.shape[dim]).reshape(-1)
    y = x.index_select(dim, flat)
    return [y.reshape(tuple(x.shape[:dim]) + tuple(indices.shape) + tuple(x.shape[dim + 1:]))]


def _gather_elements(call: RuleCall) -> list[torch.Tensor]:
    x, indices = call.x(0), call.x(1)
    dim = axis(int(call.attr("axis", 0)), x.dim())
    return [torch.gather(x, dim, _positive(indices, x.shape[dim]))]


def _linear_index(indices: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """Row-major flat index of the last axis of ``indices`` into ``dims``."""
    sizes = torch.tensor(dims, dtype=torch.int64)
    indices = _positive(indices, sizes)
    strides = [math.prod(dims[i + 1:]) for i in range(len(dims))]
    return (indices * torch.tensor(strides, dtype=torch.int64)).sum(-1)


def _gather_nd(call: RuleCall) -> list[torch.Tensor]:
    x, indices = call.x(0), call.x(1)
    b = int(call.attr("batch_dims", 0))
    k = indices.shape[-1]
    batch, inner = tuple(x.shape[:b]), tuple(x.shape[b:b + k])
    rest = tuple(x.shape[b + k:])
    data = x.reshape(math.prod(batch), math.prod(inner), *rest)
    flat = _linear_index(indices.reshape(math.prod(batch), -1, k), inner)
    rows = torch.arange(data.shape[0]).unsqueeze(1)
    y = data[rows, flat]
    return [y.reshape(tuple(indices.shape[:-1]) + rest)]


def _scatter_nd(call: RuleCall) -> list[torch.Tensor]:
    x, indices, updates = call.x(0), call.x(1), call.x(2)
    k = indices.shape[-1]
    inner, rest = tuple(x.shape[:k]), tuple(x.shape[k:])
    flat = _linear_index(indices.reshape(-1, k), inner)
    data = x.reshape(math.prod(inner), *rest)
    source = updates.reshape(-1, *rest)
    reduction = call.attr("reduction", "none")
    if reduction == "none":
        y = data.index_put((flat,), source)
    elif reduction == "add":
        y = data.index_put((flat,), source, accumulate=True)
    else:
        rows = flat.reshape((-1,) + (1,) * len(rest)).expand(source.shape)
        y = data.scatter_reduce(0, rows, source, _REDUCE[reduction], include_self=True)
    return [y.reshape(x.shape)]


def _scatter_elements(call: RuleCall) -> list[torch.Tensor]:
    x, indices, updates = call.x(0), call.x(1), call.x(2)
    dim = axis(int(call.attr("axis", 0)), x.dim())
    indices = _positive(indices, x.shape[dim])
    reduction = call.attr("reduction", "none")
    if reduction == "none":
        return [torch.scatter(x, dim, indices, updates)]
    return [torch.scatter_reduce(x, dim, indices, updates, _REDUCE[reduction])]


RULES: dict[str, Rule] = {
    "Concat": _concat,
    "Split": _split,
    "Slice": _slice,
    "Gather": _gather,
    "GatherElements": _gather_elements,
    "GatherND": _gather_nd,
    "ScatterND": _scatter_nd,
    "ScatterElements": _scatter_elements,
    "Scatter": _scatter_elements,  # opsets 9-10: the same op under its old name
}
