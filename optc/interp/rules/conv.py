"""Convolutions: Conv and ConvTranspose (1-D to 3-D, groups, dilations, any padding)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from optc.interp.context import Rule, RuleCall
from optc.interp.rules.spatial import pad_spatial, resolve_window

_CONV: dict[int, Callable[..., torch.Tensor]] = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T: dict[int, Callable[..., torch.Tensor]] = {
    1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def _conv(call: RuleCall) -> list[torch.Tensor]:
    return [convolve(call, call.x(0), call.x(1), call.input(2))]


def convolve(call: RuleCall, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None,
             ) -> torch.Tensor:
    """Conv with the node's strides, dilations, group and (auto) padding."""
    n = x.dim() - 2
    if n not in _CONV:
        raise call.fail(f"{n}-D convolution is not supported (1-D to 3-D are)")
    window = resolve_window(call, x.shape[2:], w.shape[2:])
    padding: list[int] | int = window.begins
    if not window.symmetric:
        # torch pads symmetrically only: pad the input explicitly, then convolve unpadded.
        x, padding = pad_spatial(x, window.begins, window.ends), 0
    return _CONV[n](x, w, b, stride=window.strides, padding=padding,
                    dilation=window.dilations, groups=int(call.attr("group", 1)))


def _conv_transpose(call: RuleCall) -> list[torch.Tensor]:
    x, w, b = call.x(0), call.x(1), call.input(2)
    n = x.dim() - 2
    if n not in _CONV_T:
        raise call.fail(f"{n}-D transposed convolution is not supported (1-D to 3-D are)")
    sizes = list(x.shape[2:])
    strides = list(call.attr("strides") or [1] * n)
    dilations = list(call.attr("dilations") or [1] * n)
    output_padding = list(call.attr("output_padding") or [0] * n)[:n]
    spans = [(k - 1) * d + 1 for k, d in zip(w.shape[2:], dilations, strict=True)]
    natural = [s * (i - 1) + p + k for s, i, p, k in zip(strides, sizes, output_padding, spans,
                                                         strict=True)]
    begins, out_sizes = _transpose_geometry(call, natural, strides, sizes)
    # The full ("VALID", unpadded) result, then cropped by the begin pads and cut or
    # zero-extended to the output size: one path for every pads/output_shape combination.
    full = _CONV_T[n](x, w, None, stride=strides, padding=0, output_padding=0,
                      groups=int(call.attr("group", 1)), dilation=dilations)
    ends = [o + bg - f for o, bg, f in zip(out_sizes, begins, full.shape[2:], strict=True)]
    y = pad_spatial(full, [-bg for bg in begins], ends)
    if b is not None:
        y = y + b.reshape((1, -1) + (1,) * n)
    return [y]


def _transpose_geometry(call: RuleCall, natural: list[int], strides: list[int],
                        sizes: list[int]) -> tuple[list[int], list[int]]:
    """Begin pads and output sizes of a ConvTranspose (``natural`` = size without pads).

    An explicit ``output_shape`` (or SAME_*, which asks for ``input * stride``) sets the
    size, and the surplus over the natural size is split as the ONNX specification
    says: the odd pixel at the end for SAME_UPPER, at the start otherwise. Explicit
    pads are then ignored, as onnxruntime does; a shortfall is zero-filled at the end.
    """
    n = len(natural)
    auto_pad = call.attr("auto_pad", "NOTSET")
    output_shape = call.attr("output_shape")
    if output_shape is not None:
        out_sizes = list(output_shape)[-n:]
    elif auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        out_sizes = [i * s for i, s in zip(sizes, strides, strict=True)]
    else:
        pads = [0] * (2 * n) if auto_pad == "VALID" else list(call.attr("pads") or [0] * (2 * n))
        return pads[:n], [m - pads[i] - pads[n + i] for i, m in enumerate(natural)]
    totals = [max(0, m - o) for m, o in zip(natural, out_sizes, strict=True)]
    if auto_pad == "SAME_UPPER":
        return [t // 2 for t in totals], out_sizes
    return [t - t // 2 for t in totals], out_sizes


RULES: dict[str, Rule] = {
    "Conv": _conv,
    "ConvTranspose": _conv_transpose,
}
