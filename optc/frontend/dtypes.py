"""ONNX types <-> optc dtype names (numpy / ml_dtypes names, ``seq(...)``, ``optional(...)``)."""

from __future__ import annotations

import onnx
from onnx import helper

from optc.errors import InvalidModelError
from optc.ir.dtypes import TENSOR_DTYPES, container, split_container
from optc.ir.graph import Shape


def _onnx_code_table() -> dict[int, str]:
    # Derived from onnx's own element-type -> numpy table, so new ONNX types are
    # picked up as soon as the IR knows their name.
    table: dict[int, str] = {onnx.TensorProto.STRING: "string"}
    for _, code in onnx.TensorProto.DataType.items():
        if code in (onnx.TensorProto.UNDEFINED, onnx.TensorProto.STRING):
            continue
        try:
            name = helper.tensor_dtype_to_np_dtype(code).name
        except (KeyError, ValueError, TypeError):
            continue
        if name in TENSOR_DTYPES:
            table[code] = name
    return table


_ONNX_TO_NAME = _onnx_code_table()
_NAME_TO_ONNX = {name: code for code, name in _ONNX_TO_NAME.items()}


def dtype_from_onnx(code: int) -> str | None:
    """optc dtype name of an ONNX element type; None for UNDEFINED."""
    if code == onnx.TensorProto.UNDEFINED:
        return None
    if code not in _ONNX_TO_NAME:
        raise InvalidModelError(f"unsupported ONNX element type {code}")
    return _ONNX_TO_NAME[code]


def dtype_to_onnx(name: str | None) -> int:
    """ONNX element type of a tensor dtype name; UNDEFINED for None."""
    if name is None:
        return onnx.TensorProto.UNDEFINED
    if name not in _NAME_TO_ONNX:
        raise InvalidModelError(f"dtype {name!r} has no ONNX tensor element type")
    return _NAME_TO_ONNX[name]


def dtype_from_type_proto(type_proto: onnx.TypeProto, where: str) -> str | None:
    """The optc dtype of a tensor, sequence or optional ONNX type; maps are refused."""
    kind = type_proto.WhichOneof("value")
    if kind == "tensor_type":
        return dtype_from_onnx(type_proto.tensor_type.elem_type)
    if kind in ("sequence_type", "optional_type"):
        elem = getattr(type_proto, kind).elem_type
        inner = dtype_from_type_proto(elem, where)
        if inner is None:
            raise InvalidModelError(f"{where}: {kind} without an element type")
        return container("seq" if kind == "sequence_type" else "optional", inner)
    raise InvalidModelError(f"{where} has ONNX type {kind}; only tensors, sequences and "
                            "optionals are supported")


def type_to_onnx(dtype: str | None, shape: Shape = None) -> onnx.TypeProto:
    """An ONNX type for a tensor dtype and shape, or for a container such as ``seq(float32)``
    (whose element shape is not tracked)."""
    parts = split_container(dtype or "")
    if parts is None:
        dims = None if shape is None else list(shape)
        return helper.make_tensor_type_proto(dtype_to_onnx(dtype), dims)
    kind, inner = parts
    elem = type_to_onnx(inner)
    if kind == "seq":
        return helper.make_sequence_type_proto(elem)
    return helper.make_optional_type_proto(elem)
