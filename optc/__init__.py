"""optc: a compiler-style model optimization pipeline (ONNX / PyTorch -> IR -> passes -> TVM)."""

__version__ = "0.1.0"  # before the imports: submodules read it while optc is initializing

from optc.compiler import compile_model, measure_artifact
from optc.frontend import from_onnx, from_torch, load_onnx, save_onnx, to_onnx
from optc.ir import Graph, Node, Value, parse_graph, print_graph, verify

__all__ = [
    "Graph", "Node", "Value", "__version__", "compile_model", "from_onnx", "from_torch",
    "load_onnx", "measure_artifact", "parse_graph", "print_graph", "save_onnx", "to_onnx",
    "verify",
]
