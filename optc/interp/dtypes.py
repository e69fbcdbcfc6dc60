"""Conversions between optc dtype names, ONNX element types, numpy arrays and torch tensors."""

from __future__ import annotations

import warnings

import numpy as np
import torch

from optc.errors import UserInputError
from optc.frontend.dtypes import dtype_from_onnx

_TORCH_BY_NAME: dict[str, torch.dtype] = {
    "float32": torch.float32, "float64": torch.float64, "float16": torch.float16,
    "bfloat16": torch.bfloat16, "int8": torch.int8, "int16": torch.int16,
    "int32": torch.int32, "int64": torch.int64, "uint8": torch.uint8, "uint16": torch.uint16,
    "uint32": torch.uint32, "uint64": torch.uint64, "bool": torch.bool,
    "complex64": torch.complex64, "complex128": torch.complex128,
    "float8_e4m3fn": torch.float8_e4m3fn, "float8_e4m3fnuz": torch.float8_e4m3fnuz,
    "float8_e5m2": torch.float8_e5m2, "float8_e5m2fnuz": torch.float8_e5m2fnuz,
}
_NAME_BY_TORCH = {dtype: name for name, dtype in _TORCH_BY_NAME.items()}

# ml_dtypes arrays (bfloat16, float8) have no torch.from_numpy path: they travel as raw
# bits of the same width and are reinterpreted on the torch side.
_BITS_VIEW = {1: (np.uint8, torch.uint8), 2: (np.uint16, torch.uint16)}


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype for an optc dtype name; strings and 4-bit types are refused."""
    if name not in _TORCH_BY_NAME:
        raise UserInputError(f"dtype {name!r} is not supported by the reference interpreter")
    return _TORCH_BY_NAME[name]


def torch_dtype_from_onnx(code: int) -> torch.dtype:
    """The torch dtype for an ONNX ``TensorProto`` element type (the ``to`` of Cast)."""
    name = dtype_from_onnx(code)
    if name is None:
        raise UserInputError("element type UNDEFINED cannot be computed with")
    return torch_dtype(name)


def dtype_name(dtype: torch.dtype) -> str:
    return _NAME_BY_TORCH.get(dtype, str(dtype).removeprefix("torch."))


def to_tensor(array: np.ndarray | torch.Tensor | int | float | bool) -> torch.Tensor:
    """A tensor over ``array``'s memory where possible (params are shared, never copied).

    Read-only arrays (every graph param) are wrapped without a copy: rules never write
    into their inputs, and ``run`` clones any output that still aliases a param.
    """
    if isinstance(array, torch.Tensor):
        return array
    array = np.asarray(array)
    name = array.dtype.name
    if array.dtype.kind in ("U", "S", "O"):
        raise UserInputError("string tensors are not supported by the reference interpreter")
    if any(s < 0 for s in array.strides):  # torch cannot view negative strides
        array = array.copy(order="C")
    if name in _TORCH_BY_NAME and name not in ("bfloat16",) and not name.startswith("float8"):
        return _from_numpy(array)
    target = torch_dtype(name)
    bits_np, bits_torch = _BITS_VIEW[array.dtype.itemsize]
    raw = _from_numpy(array.copy(order="C").view(bits_np))
    return raw.view(bits_torch).view(target)


def _from_numpy(array: np.ndarray) -> torch.Tensor:
    with warnings.catch_warnings():
        # torch warns about read-only arrays; see to_tensor for why sharing is safe here.
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(array)


def to_numpy(tensor: torch.Tensor) -> np.ndarray:
    """A numpy copy of ``tensor`` (detached); bfloat16 and float8 come back as ml_dtypes."""
    tensor = tensor.detach().cpu()
    name = dtype_name(tensor.dtype)
    if name == "bfloat16" or name.startswith("float8"):
        import ml_dtypes

        bits_torch = torch.uint16 if tensor.element_size() == 2 else torch.uint8
        raw = tensor.contiguous().view(bits_torch).numpy()
        return raw.view(np.dtype(getattr(ml_dtypes, name))).copy()
    return tensor.numpy().copy()
