"""optc: a compiler-style model optimization pipeline (ONNX / PyTorch -> IR -> passes -> TVM)."""

from optc.frontend import from_onnx, from_torch, load_onnx, save_onnx, to_onnx
from optc.ir import Graph, Node, Value, parse_graph, print_graph, verify

__version__ = "0.1.0"

__all__ = [
    "Graph", "Node", "Value", "__version__", "from_onnx", "from_torch", "load_onnx",
    "parse_graph", "print_graph", "save_onnx", "to_onnx", "verify",
]
