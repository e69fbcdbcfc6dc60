"""Quantization: QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear (integer types)."""

from __future__ import annotations

import torch

from optc.interp.context import Rule, RuleCall
from optc.interp.dtypes import torch_dtype_from_onnx
from optc.interp.rules.common import axis
from optc.interp.rules.conv import convolve


def _broadcast_param(param: torch.Tensor, x: torch.Tensor, call: RuleCall) -> torch.Tensor:
    """A per-tensor, per-axis or blocked scale/zero point, shaped to broadcast with x."""
    if param.numel() == 1 and param.dim() <= 1:
        return param.reshape(())
    dim = axis(int(call.attr("axis", 1)), x.dim())
    if param.dim() == 1:  # per-axis
        return param.reshape((-1,) + (1,) * (x.dim() - dim - 1))
    block = int(call.attr("block_size", 0))
    if block:  # blocked (opset 21): one value per block of ``block`` along the axis
        param = param.repeat_interleave(block, dim=dim).narrow(dim, 0, x.shape[dim])
    return param


def _saturate(values: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    if dtype.is_floating_point:
        return values.to(dtype)
    info = torch.iinfo(dtype)
    return values.clamp(info.min, info.max).to(dtype)


def _quantize(call: RuleCall) -> list[torch.Tensor]:
    x, scale, zero = call.x(0), call.x(1), call.input(2)
    if zero is not None:
        target = zero.dtype
    elif call.attr("output_dtype"):
        target = torch_dtype_from_onnx(int(call.attr("output_dtype")))
    else:
        target = torch.uint8
    scaled = x.to(scale.dtype) / _broadcast_param(scale, x, call)
    if not target.is_floating_point:
        scaled = torch.round(scaled)  # half to even, as ONNX specifies
    if zero is not None:
        scaled = scaled + _broadcast_param(zero, x, call).to(scaled.dtype)
    return [_saturate(scaled, target)]


def _dequantize(call: RuleCall) -> list[torch.Tensor]:
    x, scale, zero = call.x(0), call.x(1), call.input(2)
    values = x.to(torch.float32) if not x.is_floating_point() else x.float()
    if zero is not None:
        values = values - _broadcast_param(zero, x, call).to(torch.float32)
    return [(values * _broadcast_param(scale, x, call)).to(scale.dtype)]


def _dynamic_quantize(call: RuleCall) -> list[torch.Tensor]:
    x = call.x(0)
    low = torch.clamp(x.min(), max=0.0)
    high = torch.clamp(x.max(), min=0.0)
    scale = (high - low) / 255.0
    zero = _saturate(torch.round(-low / scale), torch.uint8)
    y = _saturate(torch.round(x / scale) + zero.to(x.dtype), torch.uint8)
    return [y, scale.to(x.dtype), zero]


def _centered(x: torch.Tensor, zero: torch.Tensor | None, channel_axis: int = 0,
              ) -> torch.Tensor:
    """``x - zero`` in float64 (exact for 8-bit products summed below 2**53); a 1-D zero
    point of several values is per channel along ``channel_axis``."""
    x = x.to(torch.float64)
    if zero is None:
        return x
    zero = zero.to(torch.float64)
    if zero.dim() == 1 and zero.numel() > 1:
        shape = [1] * x.dim()
        shape[channel_axis] = -1
        zero = zero.reshape(shape)
    return x - zero


def _conv_integer(call: RuleCall) -> list[torch.Tensor]:
    acc = convolve(call, _centered(call.x(0), call.input(2)),
                   _centered(call.x(1), call.input(3)), None)
    return [torch.round(acc).to(torch.int32)]


def _requantize(acc: torch.Tensor, in_scale: torch.Tensor,
                out_scale: torch.Tensor, out_zero: torch.Tensor | None, channel_axis: int,
                ) -> torch.Tensor:
    """Scale an integer accumulator to the output's quantized type, as onnxruntime does
    (float32 multiplier, round half to even, saturate)."""
    multiplier = (in_scale.to(torch.float32) / out_scale.to(torch.float32))
    if multiplier.dim() == 1 and multiplier.numel() > 1:
        shape = [1] * acc.dim()
        shape[channel_axis] = -1
        multiplier = multiplier.reshape(shape)
    scaled = torch.round(acc.to(torch.float32) * multiplier)
    target = torch.uint8 if out_zero is None else out_zero.dtype
    if out_zero is not None:
        scaled = scaled + out_zero.to(torch.float32)
    return _saturate(scaled, target)


def _qlinear_conv(call: RuleCall) -> list[torch.Tensor]:
    x, x_scale, x_zero = call.x(0), call.x(1), call.input(2)
    w, w_scale, w_zero = call.x(3), call.x(4), call.input(5)
    bias = call.input(8)
    acc = convolve(call, _centered(x, x_zero), _centered(w, w_zero),
                   None if bias is None else bias.to(torch.float64))
    return [_requantize(acc, x_scale.float() * w_scale.float(), call.x(6),
                        call.input(7), channel_axis=1)]


def _qlinear_matmul(call: RuleCall) -> list[torch.Tensor]:
    a, a_scale, a_zero = call.x(0), call.x(1), call.input(2)
    b, b_scale, b_zero = call.x(3), call.x(4), call.input(5)
    acc = torch.matmul(_centered(a, a_zero, channel_axis=-2),
                       _centered(b, b_zero, channel_axis=-1))
    return [_requantize(acc, a_scale.float() * b_scale.float(), call.x(6),
                        call.input(7), channel_axis=-1)]


RULES: dict[str, Rule] = {
    "QuantizeLinear": _quantize,
    "DequantizeLinear": _dequantize,
    "DynamicQuantizeLinear": _dynamic_quantize,
    "ConvInteger": _conv_integer,
    "QLinearConv": _qlinear_conv,
    "QLinearMatMul": _qlinear_matmul,
}
