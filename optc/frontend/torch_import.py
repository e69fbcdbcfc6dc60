"""PyTorch module -> ONNX -> optc IR."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from optc.errors import UserInputError
from optc.frontend.onnx_import import load_onnx
from optc.ir.graph import Graph

log = logging.getLogger(__name__)

DEFAULT_OPSET = 18


def from_torch(module: Any, example_inputs: Sequence[Any] | Any, *,
               input_names: Sequence[str] | None = None,
               output_names: Sequence[str] | None = None,
               dynamic_axes: dict[str, dict[int, str]] | None = None,
               dynamo: bool = False, opset: int = DEFAULT_OPSET) -> Graph:
    """Export ``module`` with ``torch.onnx.export`` and import the result.

    ``dynamo=False`` uses the TorchScript exporter (one self-contained file);
    ``dynamo=True`` uses torch.export (weights may land in external data, which
    is read back from the same temporary folder).
    """
    import torch

    if not isinstance(module, torch.nn.Module):
        raise UserInputError(f"from_torch needs a torch.nn.Module, got {type(module).__name__}")
    args = tuple(example_inputs) if isinstance(example_inputs, list | tuple) else (example_inputs,)
    module = module.eval()
    with tempfile.TemporaryDirectory(prefix="optc-torch-") as tmp:
        path = Path(tmp) / "model.onnx"
        with torch.no_grad():
            torch.onnx.export(module, args, str(path), input_names=input_names,
                              output_names=output_names, dynamic_axes=dynamic_axes,
                              opset_version=opset, dynamo=dynamo,
                              verbose=False)  # the dynamo exporter prints progress otherwise
        return load_onnx(path)
