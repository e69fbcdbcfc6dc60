"""Pooling: MaxPool (with indices), AveragePool, LpPool and their Global forms."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from optc.interp.context import Rule, RuleCall
from optc.interp.rules.spatial import Window, lowest, pad_spatial, resolve_window, with_ceil_mode

_MAX: dict[int, Callable[..., torch.Tensor]] = {
    1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
_AVG: dict[int, Callable[..., torch.Tensor]] = {
    1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}


def _window(call: RuleCall, x: torch.Tensor) -> Window:
    sizes = list(x.shape[2:])
    if len(sizes) not in _MAX:
        raise call.fail(f"{len(sizes)}-D pooling is not supported (1-D to 3-D are)")
    window = resolve_window(call, sizes, list(call.attr("kernel_shape")))
    return with_ceil_mode(window, sizes) if call.attr("ceil_mode", 0) else window


def _max_pool(call: RuleCall) -> list[torch.Tensor]:
    x = call.x(0)
    window = _window(call, x)
    dtype = x.dtype
    if not dtype.is_floating_point:  # torch pools floats only; int8/uint8 fit in float64
        x = x.to(torch.float64)
    padded = pad_spatial(x, window.begins, window.ends, lowest(dtype))
    pool = _MAX[len(window.kernel)]
    if not call.wants(1):
        y = pool(padded, window.kernel, window.strides, 0, window.dilations)
        return [y.to(dtype)]
    y, flat = pool(padded, window.kernel, window.strides, 0, window.dilations,
                   return_indices=True)
    return [y.to(dtype), _onnx_indices(flat, x.shape, padded.shape, window,
                                       int(call.attr("storage_order", 0)))]


def _onnx_indices(flat: torch.Tensor, shape: torch.Size, padded: torch.Size, window: Window,
                  storage_order: int) -> torch.Tensor:
    """torch's per-plane indices into the padded input -> ONNX's indices into the input.

    ONNX counts over the whole tensor (batch and channel included), row-major, or
    column-major over the spatial axes when ``storage_order`` is 1.
    """
    sizes = list(shape[2:])
    rest = flat
    coords: list[torch.Tensor] = []
    for dim in reversed(range(len(sizes))):
        coords.insert(0, rest % padded[2 + dim] - window.begins[dim])
        rest = rest // padded[2 + dim]
    order = range(len(sizes)) if storage_order == 0 else reversed(range(len(sizes)))
    index = torch.zeros_like(flat)
    for dim in order:
        index = index * sizes[dim] + coords[dim]
    planes = torch.arange(shape[0] * shape[1]).reshape(shape[0], shape[1], *[1] * len(sizes))
    return planes * math.prod(sizes) + index


def _sum_pool(x: torch.Tensor, window: Window) -> torch.Tensor:
    """Window sums over an already padded input (no implicit padding)."""
    n = len(window.kernel)
    if all(d == 1 for d in window.dilations):
        mean = _AVG[n](x, window.kernel, window.strides, 0)
        return mean * math.prod(window.kernel)
    # torch's avg_pool has no dilation: a depthwise convolution with a ones kernel does.
    channels = x.shape[1]
    ones = torch.ones((channels, 1, *window.kernel), dtype=x.dtype)
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[n]
    return conv(x, ones, stride=window.strides, dilation=window.dilations, groups=channels)


def _average_pool(call: RuleCall) -> list[torch.Tensor]:
    x = call.x(0)
    window = _window(call, x)
    sizes = list(x.shape[2:])
    base = resolve_window(call, sizes, window.kernel)  # before the ceil_mode overhang
    overhang = [e - b for e, b in zip(window.ends, base.ends, strict=True)]
    include_pad = bool(call.attr("count_include_pad", 0))
    padded = pad_spatial(x, window.begins, window.ends)
    n = len(sizes)
    if all(d == 1 for d in window.dilations) and not any(overhang) and \
            (include_pad or not any(base.begins + base.ends)):
        return [_AVG[n](padded, window.kernel, window.strides, 0)]  # every window is full
    # The divisor counts the input cells under each window, plus the explicit pads when
    # count_include_pad=1; cells past the pads (ceil_mode overhang) never count.
    ones = torch.ones((1, 1, *sizes), dtype=x.dtype)
    if include_pad:
        mask = pad_spatial(pad_spatial(ones, base.begins, base.ends, 1.0), [0] * n, overhang)
    else:
        mask = pad_spatial(ones, window.begins, window.ends)
    return [_sum_pool(padded, window) / _sum_pool(mask, window)]


def _lp_pool(call: RuleCall) -> list[torch.Tensor]:
    x = call.x(0)
    p = float(call.attr("p", 2))
    window = _window(call, x)
    sums = _sum_pool(pad_spatial(torch.abs(x) ** p, window.begins, window.ends), window)
    return [sums ** (1.0 / p)]


def _global(fn: Callable[[torch.Tensor, list[int]], torch.Tensor]) -> Rule:
    def rule(call: RuleCall) -> list[torch.Tensor]:
        x = call.x(0)
        return [fn(x, list(range(2, x.dim())))]

    return rule


def _global_lp(call: RuleCall) -> list[torch.Tensor]:
    x = call.x(0)
    p = float(call.attr("p", 2))
    dims = list(range(2, x.dim()))
    return [torch.sum(torch.abs(x) ** p, dim=dims, keepdim=True) ** (1.0 / p)]


RULES: dict[str, Rule] = {
    "MaxPool": _max_pool,
    "AveragePool": _average_pool,
    "LpPool": _lp_pool,
    "GlobalAveragePool": _global(lambda x, d: torch.mean(x, dim=d, keepdim=True)),
    "GlobalMaxPool": _global(lambda x, d: torch.amax(x, dim=d, keepdim=True)),
    "GlobalLpPool": _global_lp,
}
