"""Sliding-window geometry shared by Conv and the pools: auto_pad, pads, ceil_mode.

ONNX pads may be asymmetric and ``auto_pad`` derives them from the input size; torch
takes one symmetric padding. The rules therefore resolve every window to explicit
begin/end pads here and pad the input themselves when torch cannot express them.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from optc.interp.context import RuleCall


@dataclasses.dataclass(frozen=True)
class Window:
    """A resolved sliding window over the spatial dimensions (all lists per dimension)."""

    kernel: list[int]
    strides: list[int]
    dilations: list[int]
    begins: list[int]
    ends: list[int]

    @property
    def symmetric(self) -> bool:
        return self.begins == self.ends

    def span(self, i: int) -> int:
        """The extent of the dilated kernel along dimension ``i``."""
        return (self.kernel[i] - 1) * self.dilations[i] + 1


def resolve_window(call: RuleCall, sizes: Sequence[int], kernel: Sequence[int]) -> Window:
    """Read strides, dilations, pads and auto_pad of ``call`` for input ``sizes``."""
    n = len(sizes)
    strides = list(call.attr("strides") or [1] * n)
    dilations = list(call.attr("dilations") or [1] * n)
    auto_pad = call.attr("auto_pad", "NOTSET")
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        begins, ends = [], []
        for size, k, s, d in zip(sizes, kernel, strides, dilations, strict=True):
            total = max(0, (math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size)
            small, large = total // 2, total - total // 2
            # SAME_UPPER puts the odd extra pixel at the end, SAME_LOWER at the start.
            begins.append(small if auto_pad == "SAME_UPPER" else large)
            ends.append(large if auto_pad == "SAME_UPPER" else small)
    elif auto_pad == "VALID":
        begins, ends = [0] * n, [0] * n
    else:
        pads = list(call.attr("pads") or [0] * (2 * n))
        begins, ends = pads[:n], pads[n:]
    return Window(list(kernel), strides, dilations, begins, ends)


def with_ceil_mode(window: Window, sizes: Sequence[int]) -> Window:
    """Extend the end pads so a floor-mode pool yields the ceil-mode output size.

    As in onnxruntime and torch, the last window must start inside the input or its
    leading padding, otherwise it is dropped.
    """
    ends = list(window.ends)
    for i, size in enumerate(sizes):
        padded = size + window.begins[i] + window.ends[i]
        out = math.ceil((padded - window.span(i)) / window.strides[i]) + 1
        if (out - 1) * window.strides[i] >= size + window.begins[i]:
            out -= 1
        needed = (out - 1) * window.strides[i] + window.span(i)
        ends[i] += max(0, needed - padded)
    return dataclasses.replace(window, ends=ends)


def pad_spatial(x: torch.Tensor, begins: Sequence[int], ends: Sequence[int],
                value: float = 0.0) -> torch.Tensor:
    """Constant-pad the trailing ``len(begins)`` dimensions (negative pads crop)."""
    if not any(begins) and not any(ends):
        return x
    flat: list[int] = []
    for begin, end in zip(reversed(begins), reversed(ends), strict=True):
        flat += [begin, end]
    return F.pad(x, flat, mode="constant", value=value)


def lowest(dtype: torch.dtype) -> float:
    """The padding value that never wins a max: -inf, or the integer minimum."""
    return -math.inf if dtype.is_floating_point else float(torch.iinfo(dtype).min)
