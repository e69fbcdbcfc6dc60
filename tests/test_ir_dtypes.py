"""Dtype names: tensor element types, containers, and their ONNX spelling."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from optc.frontend.dtypes import dtype_from_onnx, dtype_to_onnx, type_to_onnx
from optc.frontend.onnx_import import type_from_onnx
from optc.ir.dtypes import TENSOR_DTYPES, container, is_tensor_dtype, is_valid_dtype
from optc.ir.text_parse import np_dtype


@pytest.mark.parametrize(("dtype", "valid"), [
    ("float32", True), ("bfloat16", True), ("seq(int64)", True),
    ("optional(seq(float16))", True), ("seq(seq(bool))", True),
    ("seq()", False), ("seq(flaot32)", False), ("list(float32)", False), ("Float32", False),
])
def test_valid_dtypes(dtype: str, valid: bool) -> None:
    assert is_valid_dtype(dtype) is valid
    assert is_tensor_dtype(dtype) is (valid and "(" not in dtype)


def test_container_kinds() -> None:
    assert container("seq", "float32") == "seq(float32)"
    with pytest.raises(ValueError, match="unknown container kind 'map'"):
        container("map", "float32")


@pytest.mark.parametrize("name", sorted(TENSOR_DTYPES))
def test_every_tensor_dtype_has_onnx_and_numpy_spellings(name: str) -> None:
    code = dtype_to_onnx(name)
    assert dtype_from_onnx(code) == name
    assert np_dtype(name) == np.dtype(onnx.helper.tensor_dtype_to_np_dtype(code)) \
        or name == "string"


@pytest.mark.parametrize(("dtype", "shape"), [
    ("float32", (2, "n", None)), ("int64", None), ("bool", ()), ("seq(float32)", None),
    ("optional(seq(uint8))", None), ("optional(int4)", None),
])
def test_onnx_type_round_trip(dtype: str, shape: tuple | None) -> None:
    assert type_from_onnx(type_to_onnx(dtype, shape), "test") == (dtype, shape)
