"""Activations and the softmax family."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from optc.interp.context import Rule, RuleCall
from optc.interp.rules.common import LEGACY_BROADCAST_OPSET, axis, unary

SOFTMAX_ND_OPSET = 13
"""Before opset 13, Softmax/LogSoftmax/Hardmax flatten the input to 2-D at ``axis``
(default 1) and normalize over the whole second part; from 13 they work on one axis
(default -1)."""

DROPOUT_BOOL_MASK_OPSET = 10
"""Dropout's mask output is bool from opset 10 (the input's type before)."""

_SELU_ALPHA = 1.67326319217681884765625
_SELU_GAMMA = 1.05070102214813232421875


def _relu(call: RuleCall) -> list[torch.Tensor]:
    return [torch.relu(call.x(0))]


def _leaky_relu(call: RuleCall) -> list[torch.Tensor]:
    return [F.leaky_relu(call.x(0), float(call.attr("alpha", 0.01)))]


def _elu(call: RuleCall) -> list[torch.Tensor]:
    return [F.elu(call.x(0), float(call.attr("alpha", 1.0)))]


def _celu(call: RuleCall) -> list[torch.Tensor]:
    return [F.celu(call.x(0), float(call.attr("alpha", 1.0)))]


def _selu(call: RuleCall) -> list[torch.Tensor]:
    x = call.x(0)
    alpha = float(call.attr("alpha", _SELU_ALPHA))
    gamma = float(call.attr("gamma", _SELU_GAMMA))
    return [gamma * torch.where(x > 0, x, alpha * torch.expm1(x))]


def _swish(call: RuleCall) -> list[torch.Tensor]:
    x = call.x(0)
    return [x * torch.sigmoid(float(call.attr("alpha", 1.0)) * x)]


def _hard_sigmoid(call: RuleCall) -> list[torch.Tensor]:
    x = call.x(0)
    alpha, beta = float(call.attr("alpha", 0.2)), float(call.attr("beta", 0.5))
    return [torch.clamp(x * alpha + beta, 0.0, 1.0)]


def _prelu(call: RuleCall) -> list[torch.Tensor]:
    x, slope = call.x(0), call.x(1)
    if call.opset < LEGACY_BROADCAST_OPSET and slope.dim() == 1 and x.dim() > 2 and \
            slope.numel() == x.shape[1]:
        # Before opset 7 a 1-D slope is per channel (axis 1), not numpy-broadcast.
        slope = slope.reshape((-1,) + (1,) * (x.dim() - 2))
    return [torch.where(x < 0, x * slope, x)]


def _thresholded_relu(call: RuleCall) -> list[torch.Tensor]:
    x = call.x(0)
    return [torch.where(x > float(call.attr("alpha", 1.0)), x, torch.zeros_like(x))]


def _gelu(call: RuleCall) -> list[torch.Tensor]:
    return [F.gelu(call.x(0), approximate=call.attr("approximate", "none"))]


def _shrink(call: RuleCall) -> list[torch.Tensor]:
    x = call.x(0)
    bias, lambd = float(call.attr("bias", 0.0)), float(call.attr("lambd", 0.5))
    zero = torch.zeros_like(x)
    shrunk = torch.where(x > lambd, x - bias, zero).to(x.dtype)
    return [torch.where(x < -lambd, (x + bias).to(x.dtype), shrunk)]


def _clip(call: RuleCall) -> list[torch.Tensor]:
    x = call.x(0)
    if call.opset < 11:  # min and max were attributes before opset 11
        low, high = call.attr("min"), call.attr("max")
    else:
        low, high = _bound(call.input(1)), _bound(call.input(2))
    if low is None and high is None:
        return [x]
    return [torch.clamp(x, low, high)]


def _bound(tensor: torch.Tensor | None) -> float | int | torch.Tensor | None:
    if tensor is None:
        return None
    if tensor.numel() == 1 and not tensor.requires_grad:
        return tensor.reshape(()).item()
    return tensor


def _softmax_family(fn: Callable[[torch.Tensor, int], torch.Tensor]) -> Rule:
    def rule(call: RuleCall) -> list[torch.Tensor]:
        x = call.x(0)
        if call.opset >= SOFTMAX_ND_OPSET:
            return [fn(x, axis(int(call.attr("axis", -1)), x.dim()))]
        start = axis(int(call.attr("axis", 1)), x.dim())
        rows = math.prod(x.shape[:start])
        return [fn(x.reshape(rows, -1), 1).reshape(x.shape)]

    return rule


def _hardmax(x: torch.Tensor, dim: int) -> torch.Tensor:
    index = torch.argmax(x, dim=dim, keepdim=True)  # first maximum wins, as in ONNX
    return torch.zeros_like(x).scatter(dim, index, 1.0)


def _dropout(call: RuleCall) -> list[torch.Tensor]:
    """The identity, with an all-true mask.

    Even with ``training_mode=1`` (opset 12+): onnxruntime's inference sessions ignore
    it too, and exporters leave it set on models traced in training mode. A pass that
    wants dropout while fine-tuning applies it itself.
    """
    x = call.x(0)
    mask_dtype = torch.bool if call.opset >= DROPOUT_BOOL_MASK_OPSET else x.dtype
    return [x, torch.ones_like(x, dtype=mask_dtype)]


RULES: dict[str, Rule] = {
    "Relu": _relu,
    "LeakyRelu": _leaky_relu,
    "Elu": _elu,
    "Celu": _celu,
    "Selu": _selu,
    "Sigmoid": unary(torch.sigmoid),
    "Swish": _swish,
    "HardSigmoid": _hard_sigmoid,
    "HardSwish": unary(F.hardswish),
    "Tanh": unary(torch.tanh),
    "Softplus": unary(F.softplus),
    "Softsign": unary(F.softsign),
    "Mish": unary(F.mish),
    "PRelu": _prelu,
    "ThresholdedRelu": _thresholded_relu,
    "Gelu": _gelu,
    "Shrink": _shrink,
    "Clip": _clip,
    "Softmax": _softmax_family(lambda x, d: torch.softmax(x, d)),
    "LogSoftmax": _softmax_family(lambda x, d: torch.log_softmax(x, d)),
    "Hardmax": _softmax_family(_hardmax),
    "Dropout": _dropout,
}
