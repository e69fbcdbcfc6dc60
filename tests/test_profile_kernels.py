"""``benchmarks/profile_kernels.py`` on the bundled digits CNN: every kernel the VM calls
is timed, and the multiply-adds it reports for the convolutions and the classifier are
those of the model's layers."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from types import ModuleType

from optc.frontend import load_onnx

ROOT = Path(__file__).resolve().parent.parent
BENCHMARK = ROOT / "benchmarks" / "profile_kernels.py"
DIGITS = ROOT / "examples" / "models" / "digits_cnn.onnx"


def benchmark() -> ModuleType:
    sys.path.insert(0, str(BENCHMARK.parent))  # its imports of compile_vs_ort / timing
    spec = importlib.util.spec_from_file_location("profile_kernels", BENCHMARK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


def layer_macs(path: Path) -> int:
    """Multiply-adds of the model's Conv and Gemm nodes, from their shapes."""
    graph = load_onnx(path)
    total = 0
    for node in graph.nodes:
        if node.op == "Conv":
            weight = graph.value(node.inputs[1]).shape
            out = node.outputs[0].shape
            total += math.prod(out) * math.prod(weight[1:])
        elif node.op == "Gemm":
            rows, depth = graph.value(node.inputs[0]).shape
            total += rows * depth * graph.value(node.inputs[1]).shape[0]
    return total


def test_digits_kernels_are_timed_and_counted(capsys: object) -> None:
    module = benchmark()
    kernels, peak = module.profile(DIGITS, None, repeat=3)
    assert peak > 0
    assert kernels == sorted(kernels, key=lambda k: k.seconds, reverse=True)
    assert all(k.seconds > 0 and k.calls >= 1 for k in kernels)
    contractions = [k for k in kernels if "conv2d" in k.name or "matmul" in k.name]
    assert len(contractions) == 4  # three convolutions and the classifier
    assert sum(k.flops or 0 for k in contractions) == 2 * layer_macs(DIGITS)
    shares = [k.seconds / sum(x.seconds for x in kernels) for k in kernels]
    assert math.isclose(sum(shares), 1.0)
    module.print_table(kernels, peak, top=3)
    table = capsys.readouterr().out.splitlines()  # type: ignore[attr-defined]
    assert len(table) == 1 + 3 + 1 and table[1].startswith(kernels[0].name[:51])
