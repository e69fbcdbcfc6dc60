"""Tensors from attributes and shapes, and casts: Constant, ConstantOfShape, Range, Cast, ..."""

from __future__ import annotations

import math

import numpy as np
import torch

from optc.interp.context import Rule, RuleCall
from optc.interp.dtypes import to_tensor, torch_dtype_from_onnx

_FLOAT8 = (torch.float8_e4m3fn, torch.float8_e4m3fnuz, torch.float8_e5m2, torch.float8_e5m2fnuz)
_CONSTANT_ATTRS = ("value", "value_float", "value_floats", "value_int", "value_ints")


def _constant(call: RuleCall) -> list[torch.Tensor]:
    for key in _CONSTANT_ATTRS:
        if key in call.node.attrs:
            found = call.node.attrs[key]
            break
    else:
        raise call.fail(f"needs one of {', '.join(_CONSTANT_ATTRS)} "
                        "(sparse and string constants are not supported)")
    if key.startswith("value_float"):
        array = np.asarray(found, dtype=np.float32)
    elif key.startswith("value_int"):
        array = np.asarray(found, dtype=np.int64)
    else:
        array = np.asarray(found)
    # A copy: the node's attribute array is shared with every graph that holds the node.
    return [to_tensor(array).clone()]


def _constant_of_shape(call: RuleCall) -> list[torch.Tensor]:
    shape = call.ints(0) or []
    value = call.attr("value")
    fill = to_tensor(np.zeros(1, np.float32) if value is None else np.asarray(value))
    return [torch.full(shape, fill.reshape(-1)[0].item(), dtype=fill.dtype)]


def _range(call: RuleCall) -> list[torch.Tensor]:
    start, limit, delta = call.x(0), call.x(1), call.x(2)
    if start.is_floating_point():
        # ONNX defines the count as ceil((limit - start) / delta) and the elements as
        # start + i * delta; computing them that way avoids arange's own rounding.
        count = max(math.ceil((limit.item() - start.item()) / delta.item()), 0)
        steps = torch.arange(count, dtype=start.dtype)
        return [start.reshape(()) + steps * delta.reshape(())]
    return [torch.arange(start.item(), limit.item(), delta.item(), dtype=start.dtype)]


def _cast(call: RuleCall) -> list[torch.Tensor]:
    return [_convert(call, call.x(0), torch_dtype_from_onnx(int(call.attr("to"))))]


def _cast_like(call: RuleCall) -> list[torch.Tensor]:
    return [_convert(call, call.x(0), call.x(1).dtype)]


def _convert(call: RuleCall, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    if dtype in _FLOAT8 and call.attr("saturate", 1) and x.is_floating_point():
        # saturate=1 (the default) clamps out-of-range values, infinities included, to
        # the largest finite float8; torch would give NaN or inf.
        largest = torch.finfo(dtype).max
        x = x.clamp(-largest, largest)
    return x.to(dtype)


def _eye_like(call: RuleCall) -> list[torch.Tensor]:
    x = call.x(0)
    dtype = call.attr("dtype")
    target = x.dtype if dtype is None else torch_dtype_from_onnx(int(dtype))
    rows = torch.arange(x.shape[0]).unsqueeze(1)
    cols = torch.arange(x.shape[1]).unsqueeze(0)
    return [(cols - rows == int(call.attr("k", 0))).to(target)]


RULES: dict[str, Rule] = {
    "Constant": _constant,
    "ConstantOfShape": _constant_of_shape,
    "Range": _range,
    "Cast": _cast,
    "CastLike": _cast_like,
    "EyeLike": _eye_like,
}
