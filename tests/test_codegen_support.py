"""Shared helpers for the code generation tests: small graphs, ELF headers, probes.

Named ``test_*`` only so that it sits with the tests it serves; it holds no tests.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from optc.ir.graph import Dim, Graph, Node, Value

EM_X86_64 = 62
EM_AARCH64 = 183


def tiny_cnn(batch: Dim = 1, input_name: str = "x") -> Graph:
    """Conv -> Relu -> GlobalAveragePool -> Flatten -> MatMul, plus an int64 ArgMax output.

    Seeded random weights; compiles in about a second, so tests of everything around
    the compiler (artifacts, feeds, timing) stay fast.
    """
    rng = np.random.default_rng(0)
    params = {"w": rng.normal(size=(4, 3, 3, 3)).astype(np.float32),
              "b": rng.normal(size=(4,)).astype(np.float32),
              "fc": rng.normal(size=(4, 5)).astype(np.float32)}

    def f32(name: str, *dims: int) -> Value:
        return Value(name, "float32", (batch, *dims))

    nodes = (
        Node("Conv", (input_name, "w", "b"), (f32("c", 4, 8, 8),),
             {"kernel_shape": (3, 3), "pads": (1, 1, 1, 1)}),
        Node("Relu", ("c",), (f32("r", 4, 8, 8),)),
        Node("GlobalAveragePool", ("r",), (f32("p", 4, 1, 1),)),
        Node("Flatten", ("p",), (f32("f", 4),)),
        Node("MatMul", ("f", "fc"), (f32("y", 5),)),
        Node("ArgMax", ("y",), (Value("k", "int64", (batch, 1)),), {"axis": 1}),
    )
    return Graph((f32(input_name, 3, 8, 8),), nodes, (f32("y", 5), Value("k", "int64", (batch, 1))),
                 params, name="tiny_cnn", opsets={"": 17})


def tiny_feeds(batch: int = 1) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(1).normal(size=(batch, 3, 8, 8)).astype(np.float32)}


def elf_machine(path: Path) -> int:
    """``e_machine`` of an ELF file (little-endian, as on x86-64 and AArch64 Linux)."""
    header = path.read_bytes()[:20]
    assert header[:4] == b"\x7fELF", f"{path} is not an ELF file"
    return struct.unpack_from("<H", header, 18)[0]


def probe_values(graph: Graph, count: int) -> list[str]:
    """``count`` activations spread through the network (not constant-producing nodes).

    The light models' weights are constants, so their softmax outputs are uniform
    (0.001 everywhere) and would agree with any wrong computation; the activations
    inside the network carry the input's structure.
    """
    names = [n.outputs[0].name for n in graph.nodes
             if n.op not in ("Constant", "ConstantOfShape") and n.outputs[0].name
             not in graph.output_names]
    step = max(len(names) // count, 1)
    return names[step - 1::step][:count]
