"""Loading ONNX external data without letting a model read files outside its folder.

A model names each external tensor's file in its ``location`` field. A hostile or
careless model could point it at ``../../etc/passwd`` or an absolute path; optc
refuses any location that does not resolve (symlinks included) inside the model's
own folder, and reports missing or short files and symbolic links (which onnx's
reader refuses) as bad input rather than crashing.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import onnx
from onnx import external_data_helper

from optc.errors import InvalidModelError


def load_external_data_safely(model: onnx.ModelProto, base_dir: Path) -> None:
    """Check every external reference of ``model`` against ``base_dir``, then load them."""
    base = base_dir.resolve()
    has_external = False
    for tensor in _external_tensors(model):
        has_external = True
        _check_reference(tensor, base)
    if has_external:
        try:
            external_data_helper.load_external_data_for_model(model, str(base))
        except (OSError, ValueError, onnx.checker.ValidationError) as exc:
            raise InvalidModelError(f"cannot load external data: {exc}") from exc


def _external_tensors(model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    for tensor in external_data_helper._get_all_tensors(model):
        if external_data_helper.uses_external_data(tensor):
            yield tensor


def _check_reference(tensor: onnx.TensorProto, base: Path) -> None:
    info = {entry.key: entry.value for entry in tensor.external_data}
    location = info.get("location", "")
    if not location:
        raise InvalidModelError(f"tensor {tensor.name!r}: external data without a location")
    if os.path.isabs(location) or Path(location).drive:
        raise InvalidModelError(
            f"tensor {tensor.name!r}: external data path {location!r} is absolute; "
            "it must be relative to the model's folder")
    target = (base / location).resolve()
    if target != base and base not in target.parents:
        raise InvalidModelError(
            f"tensor {tensor.name!r}: external data path {location!r} escapes the model's folder")
    if (base / location).is_symlink():
        # onnx's reader refuses links outright; say so before it fails with a traceback.
        raise InvalidModelError(
            f"tensor {tensor.name!r}: external data file {location!r} is a symbolic link; "
            "store the data file itself next to the model")
    if not target.is_file():
        raise InvalidModelError(
            f"tensor {tensor.name!r}: external data file {location!r} not found next to the model")
    offset = int(info.get("offset", 0) or 0)
    length = int(info.get("length", 0) or 0)
    if offset + length > target.stat().st_size:
        raise InvalidModelError(
            f"tensor {tensor.name!r}: external data file {location!r} is shorter than "
            f"offset+length ({offset}+{length}); the file is truncated")
