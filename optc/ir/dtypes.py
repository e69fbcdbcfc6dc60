"""Dtype names of IR values: tensor element types and the sequence / optional containers.

A tensor value's dtype is a numpy / ml_dtypes name such as ``"float32"`` or
``"bfloat16"`` (``"string"`` for text). ONNX also has non-tensor values; they are
spelled as container types around a tensor dtype so that passes which only know
tensors see an unfamiliar dtype instead of a wrong one:

- ``"seq(float32)"``: a sequence of float32 tensors (``SequenceEmpty``, ``SplitToSequence``)
- ``"optional(int64)"``, ``"optional(seq(float32))"``: a value that may be absent

A container value has no shape of its own (``Value.shape`` is None); the shapes of a
sequence's elements are not tracked.
"""

from __future__ import annotations

TENSOR_DTYPES = frozenset({
    "bool", "string", "complex64", "complex128",
    "int2", "int4", "int8", "int16", "int32", "int64",
    "uint2", "uint4", "uint8", "uint16", "uint32", "uint64",
    "float16", "bfloat16", "float32", "float64",
    "float4_e2m1fn", "float6_e2m3fn", "float6_e3m2fn",
    "float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz", "float8_e8m0fnu",
})
"""Every tensor element type the IR knows."""

CONTAINERS = ("seq", "optional")
"""Non-tensor value kinds, written ``kind(inner)``."""


def split_container(dtype: str) -> tuple[str, str] | None:
    """``("seq", "float32")`` for ``"seq(float32)"``; None for a plain tensor dtype."""
    for kind in CONTAINERS:
        if dtype.startswith(kind + "(") and dtype.endswith(")"):
            return kind, dtype[len(kind) + 1:-1]
    return None


def container(kind: str, inner: str) -> str:
    """The dtype name of a ``kind`` container (``"seq"`` or ``"optional"``) of ``inner``."""
    if kind not in CONTAINERS:
        raise ValueError(f"unknown container kind {kind!r}; expected one of {CONTAINERS}")
    return f"{kind}({inner})"


def is_tensor_dtype(dtype: str | None) -> bool:
    """True for a known tensor element type (False for containers and unknown dtypes)."""
    return dtype in TENSOR_DTYPES


def is_valid_dtype(dtype: str) -> bool:
    """True for a tensor dtype or a well-formed container of one (``optional(seq(int64))``)."""
    parts = split_container(dtype)
    if parts is None:
        return dtype in TENSOR_DTYPES
    return is_valid_dtype(parts[1])
