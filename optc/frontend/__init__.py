"""Frontends: ONNX <-> IR, PyTorch module -> IR."""

from optc.frontend.onnx_export import save_onnx, to_onnx
from optc.frontend.onnx_import import from_onnx, load_onnx, read_onnx_model
from optc.frontend.torch_import import from_torch

__all__ = ["from_onnx", "from_torch", "load_onnx", "read_onnx_model", "save_onnx", "to_onnx"]
