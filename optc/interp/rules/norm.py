"""Normalizations: BatchNormalization, InstanceNormalization, LayerNormalization, ..."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from optc.interp.context import Rule, RuleCall
from optc.interp.rules.common import axes, axis

BATCHNORM_TRAINING_OPSET = 14
"""From opset 14, ``training_mode=1`` normalizes with batch statistics and updates the
running ones; earlier versions are evaluated in inference mode, as onnxruntime does."""

SPATIAL_ATTR_LAST_OPSET = 8
"""Up to opset 8, BatchNormalization ``spatial=0`` means per-activation statistics."""

GROUPNORM_PER_CHANNEL_OPSET = 21
"""GroupNormalization scale/bias are per group before opset 21, per channel from 21."""


def _channel_view(t: torch.Tensor, rank: int) -> torch.Tensor:
    return t.reshape((1, -1) + (1,) * (rank - 2))


def _batch_norm(call: RuleCall) -> list[torch.Tensor]:
    x, scale, bias, mean, var = (call.x(i) for i in range(5))
    eps = float(call.attr("epsilon", 1e-5))
    training = call.opset >= BATCHNORM_TRAINING_OPSET and call.attr("training_mode", 0)
    if training:
        return _batch_norm_training(call, x, scale, bias, mean, var, eps)
    if call.opset <= SPATIAL_ATTR_LAST_OPSET and call.attr("spatial", 1) == 0:
        shape = (1, *mean.shape)  # per-activation statistics of shape (C, D1, ...)
    else:
        shape = (1, -1) + (1,) * (x.dim() - 2)
    # Written out rather than F.batch_norm so every input, the statistics included,
    # stays differentiable.
    inv_std = torch.rsqrt(var.reshape(shape) + eps)
    y = (x - mean.reshape(shape)) * (scale.reshape(shape) * inv_std) + bias.reshape(shape)
    return [y, mean, var][: max(1, call.n_outputs)]


def _batch_norm_training(call: RuleCall, x: torch.Tensor, scale: torch.Tensor,
                         bias: torch.Tensor, mean: torch.Tensor, var: torch.Tensor,
                         eps: float) -> list[torch.Tensor]:
    dims = [0, *range(2, x.dim())]
    batch_mean = x.mean(dim=dims)
    batch_var = x.var(dim=dims, unbiased=False)
    momentum = float(call.attr("momentum", 0.9))
    y = (x - _channel_view(batch_mean, x.dim())) * _channel_view(
        scale * torch.rsqrt(batch_var + eps), x.dim()) + _channel_view(bias, x.dim())
    running_mean = mean * momentum + batch_mean * (1 - momentum)
    running_var = var * momentum + batch_var * (1 - momentum)
    return [y, running_mean, running_var]


def _normalize(x: torch.Tensor, dims: list[int], eps: float,
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x - mean) * inv_std over ``dims``, with the mean and inv_std (kept dims)."""
    mean = x.mean(dim=dims, keepdim=True)
    centered = x - mean
    inv_std = torch.rsqrt((centered * centered).mean(dim=dims, keepdim=True) + eps)
    return centered * inv_std, mean, inv_std


def _instance_norm(call: RuleCall) -> list[torch.Tensor]:
    x, scale, bias = call.x(0), call.x(1), call.x(2)
    normed, _, _ = _normalize(x, list(range(2, x.dim())), float(call.attr("epsilon", 1e-5)))
    return [normed * _channel_view(scale, x.dim()) + _channel_view(bias, x.dim())]


def _stash(call: RuleCall, x: torch.Tensor) -> torch.Tensor:
    """Half-precision inputs are normalized in float32 when stash_type is 1 (the default)."""
    if x.dtype in (torch.float16, torch.bfloat16) and call.attr("stash_type", 1) == 1:
        return x.float()
    return x


def _layer_norm(call: RuleCall) -> list[torch.Tensor]:
    x, scale, bias = call.x(0), call.x(1), call.input(2)
    start = axis(int(call.attr("axis", -1)), x.dim())
    eps = float(call.attr("epsilon", 1e-5))
    work = _stash(call, x)
    shape = tuple(x.shape[start:])
    if not (call.wants(1) or call.wants(2)):
        weight = scale.to(work.dtype).expand(shape)
        shift = None if bias is None else bias.to(work.dtype).expand(shape)
        return [F.layer_norm(work, shape, weight, shift, eps).to(x.dtype)]
    normed, mean, inv_std = _normalize(work, list(range(start, x.dim())), eps)
    y = normed * scale.to(work.dtype)
    if bias is not None:
        y = y + bias.to(work.dtype)
    return [y.to(x.dtype), mean, inv_std]


def _group_norm(call: RuleCall) -> list[torch.Tensor]:
    x, scale, bias = call.x(0), call.x(1), call.x(2)
    groups = int(call.attr("num_groups"))
    work = _stash(call, x)
    grouped = work.reshape(x.shape[0], groups, -1)
    normed, _, _ = _normalize(grouped, [2], float(call.attr("epsilon", 1e-5)))
    normed = normed.reshape(x.shape)
    if call.opset < GROUPNORM_PER_CHANNEL_OPSET:
        per_group = x.shape[1] // groups
        scale, bias = scale.repeat_interleave(per_group), bias.repeat_interleave(per_group)
    y = normed * _channel_view(scale, x.dim()) + _channel_view(bias, x.dim())
    return [y.to(x.dtype)]


def _rms_norm(call: RuleCall) -> list[torch.Tensor]:
    x, scale = call.x(0), call.x(1)
    start = axis(int(call.attr("axis", -1)), x.dim())
    work = _stash(call, x)
    dims = list(range(start, x.dim()))
    inv = torch.rsqrt((work * work).mean(dim=dims, keepdim=True)
                      + float(call.attr("epsilon", 1e-5)))
    return [(work * inv * scale.to(work.dtype)).to(x.dtype)]


def _lp_norm(call: RuleCall) -> list[torch.Tensor]:
    x = call.x(0)
    dim = axis(int(call.attr("axis", -1)), x.dim())
    norm = torch.linalg.vector_norm(x, ord=int(call.attr("p", 2)), dim=dim, keepdim=True)
    return [x / torch.where(norm == 0, torch.ones_like(norm), norm)]  # 0 stays 0


def _mean_variance_norm(call: RuleCall) -> list[torch.Tensor]:
    x = call.x(0)
    dims = axes(call.attr("axes", (0, 2, 3)), x.dim())
    # ONNX's function body: (x - E[x]) / (sqrt(E[x^2] - E[x]^2) + 1e-9).
    mean = x.mean(dim=dims, keepdim=True)
    var = (x * x).mean(dim=dims, keepdim=True) - mean * mean
    return [(x - mean) / (torch.sqrt(var) + 1e-9)]


def _lrn(call: RuleCall) -> list[torch.Tensor]:
    x = call.x(0)
    size = int(call.attr("size"))
    alpha, beta = float(call.attr("alpha", 1e-4)), float(call.attr("beta", 0.75))
    bias = float(call.attr("bias", 1.0))
    # ONNX sums squares over channels [c - floor((size-1)/2), c + ceil((size-1)/2)] and
    # scales by alpha / size: an average over a zero-padded channel window times alpha.
    n, c = x.shape[0], x.shape[1]
    squares = (x * x).reshape(n, 1, c, -1)
    squares = F.pad(squares, (0, 0, (size - 1) // 2, size // 2))
    mean = F.avg_pool2d(squares, (size, 1), stride=1).reshape(x.shape)
    return [x / (bias + alpha * mean) ** beta]


RULES: dict[str, Rule] = {
    "BatchNormalization": _batch_norm,
    "InstanceNormalization": _instance_norm,
    "LayerNormalization": _layer_norm,
    "GroupNormalization": _group_norm,
    "RMSNormalization": _rms_norm,
    "LpNormalization": _lp_norm,
    "MeanVarianceNormalization": _mean_variance_norm,
    "LRN": _lrn,
}
