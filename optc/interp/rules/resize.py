"""Resize and Upsample: nearest, (n-)linear and cubic, one axis at a time.

Interpolation is separable, so each resized axis is a gather of neighbours followed
by a weighted sum. Neighbour indices and weights depend only on sizes and attributes:
they are planned in numpy (float64, following ONNX's reference implementation) and
applied with torch ops, so the result stays differentiable in the input.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from optc.interp.context import Rule, RuleCall
from optc.interp.rules.common import axes as normalize_axes
from optc.interp.rules.resize_plan import Sampling, plan_axis

RESIZE_ROI_OPSET = 11
"""Resize-10 (like Upsample) maps coordinates asymmetrically and rounds nearest
neighbours the "simple" way; from 11 the attributes choose."""


def _resize(call: RuleCall) -> list[torch.Tensor]:
    x = call.x(0)
    if call.opset < RESIZE_ROI_OPSET:
        return [_legacy(call, x, call.x(1))]
    rank = x.dim()
    axes = normalize_axes(call.attr("axes") or range(rank), rank)
    roi, scales, sizes = _floats(call.input(1)), _floats(call.input(2)), call.ints(3)
    sampling = Sampling(
        mode=call.attr("mode", "nearest"),
        transform=call.attr("coordinate_transformation_mode", "half_pixel"),
        nearest=call.attr("nearest_mode", "round_prefer_floor"),
        cubic_a=float(call.attr("cubic_coeff_a", -0.75)),
        exclude_outside=bool(call.attr("exclude_outside", 0)),
        antialias=bool(call.attr("antialias", 0)),
        extrapolation=float(call.attr("extrapolation_value", 0.0)))
    full_roi = _full_roi(roi, axes, rank) if sampling.transform == "tf_crop_and_resize" \
        else None
    full_scales, out_sizes = _targets(call, x, axes, scales, sizes)
    return [_resample(x, axes, full_scales, out_sizes, full_roi, sampling)]


def _upsample(call: RuleCall) -> list[torch.Tensor]:
    x = call.x(0)
    scales = call.x(1) if call.opset >= 9 else torch.tensor(call.attr("scales"))
    return [_legacy(call, x, scales)]


def _legacy(call: RuleCall, x: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """Upsample and Resize-10: scales only, asymmetric coordinates."""
    mode = call.attr("mode", "nearest")
    sampling = Sampling(mode="linear" if mode in ("linear", "bilinear") else mode,
                        transform="asymmetric", nearest="simple")
    factors = [float(s) for s in scales.reshape(-1).tolist()]
    sizes = [scaled_size(d, s) for d, s in zip(x.shape, factors, strict=True)]
    return _resample(x, list(range(x.dim())), factors, sizes, None, sampling)


def scaled_size(size: int, scale: float) -> int:
    """floor(size * scale) computed in float32, as onnxruntime does: 5 * 1.4f is 7 there,
    but 6.99999... (floor 6) in float64."""
    return math.floor(np.float32(size) * np.float32(scale))


def _floats(tensor: torch.Tensor | None) -> list[float] | None:
    """An optional float input; an empty tensor counts as omitted."""
    if tensor is None or tensor.numel() == 0:
        return None
    return [float(v) for v in tensor.reshape(-1).tolist()]


def _targets(call: RuleCall, x: torch.Tensor, axes: list[int], scales: list[float] | None,
             sizes: list[int] | None) -> tuple[list[float], list[int]]:
    """Full-rank scales and output sizes from the ``scales`` or ``sizes`` input."""
    shape = list(x.shape)
    full_scales, out_sizes = [1.0] * len(shape), list(shape)
    if sizes:
        ratios = [sizes[i] / shape[a] for i, a in enumerate(axes)]
        policy = call.attr("keep_aspect_ratio_policy", "stretch")
        if policy != "stretch":
            one = min(ratios) if policy == "not_larger" else max(ratios)
            ratios = [one] * len(axes)
            sizes = [int(one * shape[a] + 0.5) for a in axes]  # round half up
        for i, a in enumerate(axes):
            full_scales[a], out_sizes[a] = ratios[i], sizes[i]
    elif scales:
        for i, a in enumerate(axes):
            full_scales[a], out_sizes[a] = scales[i], scaled_size(shape[a], scales[i])
    else:
        raise call.fail("one of scales or sizes must be given")
    return full_scales, out_sizes


def _full_roi(roi: list[float] | None, axes: list[int], rank: int,
              ) -> list[tuple[float, float]] | None:
    if roi is None:
        return None
    full = [(0.0, 1.0)] * rank
    for i, a in enumerate(axes):
        full[a] = (roi[i], roi[len(axes) + i])
    return full


def _resample(x: torch.Tensor, axes: list[int], scales: list[float], sizes: list[int],
              roi: list[tuple[float, float]] | None, sampling: Sampling) -> torch.Tensor:
    work = x if x.is_floating_point() or sampling.mode == "nearest" else x.to(torch.float64)
    for a in axes:
        window = None if roi is None else roi[a]
        if scales[a] == 1.0 and sizes[a] == work.shape[a] and window in (None, (0.0, 1.0)):
            continue  # identity along this axis
        plan = plan_axis(sampling, work.shape[a], sizes[a], scales[a], window)
        work = _apply(work, a, plan.indices, plan.weights, plan.outside, sampling)
    if work.dtype != x.dtype:  # integer images: round and saturate back
        info = torch.iinfo(x.dtype)
        work = torch.round(work).clamp(info.min, info.max).to(x.dtype)
    return work


def _apply(x: torch.Tensor, dim: int, indices: np.ndarray, weights: np.ndarray | None,
           outside: np.ndarray | None, sampling: Sampling) -> torch.Tensor:
    out_n, taps = indices.shape
    gathered = x.index_select(dim, torch.from_numpy(indices.reshape(-1)))
    if weights is None:  # nearest: one tap, no arithmetic
        y = gathered
    else:
        shape = list(x.shape)
        shape[dim:dim + 1] = [out_n, taps]
        view = [1] * len(shape)
        view[dim:dim + 2] = [out_n, taps]
        w = torch.from_numpy(weights).to(x.dtype).reshape(view)
        y = (gathered.reshape(shape) * w).sum(dim=dim + 1)
    if outside is not None and outside.any():
        view = [1] * y.dim()
        view[dim] = out_n
        mask = torch.from_numpy(outside).reshape(view)
        y = torch.where(mask, torch.tensor(sampling.extrapolation, dtype=y.dtype), y)
    return y


RULES: dict[str, Rule] = {"Resize": _resize, "Upsample": _upsample}
