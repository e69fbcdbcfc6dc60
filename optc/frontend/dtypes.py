"""ONNX element types <-> optc dtype names (numpy / ml_dtypes names)."""

from __future__ import annotations

import onnx

from optc.errors import InvalidModelError

_P = onnx.TensorProto
_ONNX_TO_NAME: dict[int, str] = {
    _P.FLOAT: "float32", _P.DOUBLE: "float64", _P.FLOAT16: "float16", _P.BFLOAT16: "bfloat16",
    _P.INT8: "int8", _P.INT16: "int16", _P.INT32: "int32", _P.INT64: "int64",
    _P.UINT8: "uint8", _P.UINT16: "uint16", _P.UINT32: "uint32", _P.UINT64: "uint64",
    _P.BOOL: "bool", _P.STRING: "string", _P.COMPLEX64: "complex64", _P.COMPLEX128: "complex128",
    _P.FLOAT8E4M3FN: "float8_e4m3fn", _P.FLOAT8E4M3FNUZ: "float8_e4m3fnuz",
    _P.FLOAT8E5M2: "float8_e5m2", _P.FLOAT8E5M2FNUZ: "float8_e5m2fnuz",
    _P.INT4: "int4", _P.UINT4: "uint4",
}
_NAME_TO_ONNX = {name: code for code, name in _ONNX_TO_NAME.items()}


def dtype_from_onnx(code: int) -> str | None:
    """optc dtype name of an ONNX element type; None for UNDEFINED."""
    if code == _P.UNDEFINED:
        return None
    if code not in _ONNX_TO_NAME:
        raise InvalidModelError(f"unsupported ONNX element type {code}")
    return _ONNX_TO_NAME[code]


def dtype_to_onnx(name: str | None) -> int:
    if name is None:
        return _P.UNDEFINED
    if name not in _NAME_TO_ONNX:
        raise InvalidModelError(f"dtype {name!r} has no ONNX equivalent")
    return _NAME_TO_ONNX[name]
