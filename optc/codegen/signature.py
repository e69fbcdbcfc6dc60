"""The input/output signature of a compiled model, and checking feeds against it."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from optc.errors import UserInputError


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """One model input or output: name, dtype (``"float32"``) and shape (None: unknown dim)."""

    name: str
    dtype: str
    shape: tuple[int | None, ...] | None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype,
                "shape": None if self.shape is None else list(self.shape)}

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> TensorSpec:
        shape = data.get("shape")
        return TensorSpec(str(data["name"]), str(data["dtype"]),
                          None if shape is None else tuple(shape))


def output_specs(names: Sequence[str], ret_type: Any) -> tuple[TensorSpec, ...]:
    """Specs of the outputs named ``names`` from a Relax function's return type.

    A single output is a ``TensorType``, several a ``TupleType`` of them. A shape
    Relax cannot state statically (data-dependent, e.g. ``NonZero``) keeps its rank
    with unknown dims.
    """
    fields = list(ret_type.fields) if hasattr(ret_type, "fields") else [ret_type]
    if len(fields) != len(names):
        raise UserInputError(f"TVM's module returns {len(fields)} values, the graph declares "
                             f"{len(names)} outputs")
    return tuple(_spec(name, ty) for name, ty in zip(names, fields, strict=True))


def _spec(name: str, ty: Any) -> TensorSpec:
    if not hasattr(ty, "dtype"):
        raise UserInputError(f"output {name!r} is not a tensor ({ty}); only tensor outputs "
                             "are supported")
    shape: tuple[int | None, ...] | None
    if ty.shape is not None:
        shape = tuple(_static(d) for d in ty.shape.values)
    elif ty.ndim >= 0:
        shape = (None,) * int(ty.ndim)
    else:
        shape = None
    return TensorSpec(name, str(ty.dtype), shape)


def _static(dim: Any) -> int | None:
    try:
        return int(dim)
    except (TypeError, ValueError):
        return None


def check_feeds(inputs: Sequence[TensorSpec], feeds: Mapping[str, Any]) -> list[np.ndarray]:
    """The feeds as contiguous arrays in input order; wrong names, dtypes or shapes are refused."""
    expected = [spec.name for spec in inputs]
    if set(feeds) != set(expected):
        missing = sorted(set(expected) - set(feeds))
        unknown = sorted(set(feeds) - set(expected))
        raise UserInputError(f"feeds do not match the model's inputs {expected}: "
                             f"missing {missing}, unknown {unknown}")
    arrays = []
    for spec in inputs:
        array = np.ascontiguousarray(feeds[spec.name])
        if str(array.dtype) != spec.dtype:
            raise UserInputError(f"input {spec.name!r} must be {spec.dtype}, got {array.dtype}")
        if spec.shape is not None and not _shape_matches(array.shape, spec.shape):
            raise UserInputError(f"input {spec.name!r} must have shape {list(spec.shape)}, "
                                 f"got {list(array.shape)}")
        arrays.append(array)
    return arrays


def _shape_matches(actual: tuple[int, ...], expected: tuple[int | None, ...]) -> bool:
    return len(actual) == len(expected) and all(
        e is None or a == e for a, e in zip(actual, expected, strict=True))


def example_feeds(inputs: Sequence[TensorSpec]) -> dict[str, np.ndarray]:
    """Deterministic feeds for timing: a ramp in [0, 1) for floats, zeros otherwise."""
    feeds = {}
    for spec in inputs:
        if spec.shape is None or any(d is None for d in spec.shape):
            raise UserInputError(f"input {spec.name!r} has no static shape; pass feeds")
        shape = tuple(int(d) for d in spec.shape if d is not None)
        dtype = np.dtype(spec.dtype)
        size = int(np.prod(shape))
        if dtype.kind == "f":
            feeds[spec.name] = (np.arange(size).reshape(shape) / max(size, 1)).astype(dtype)
        else:
            feeds[spec.name] = np.zeros(shape, dtype)
    return feeds
