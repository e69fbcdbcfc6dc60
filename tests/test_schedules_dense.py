"""Dense (``MatMul`` on a constant) weights are packed by their size, not their MACs.

MiniLM's 16-token linear layers (384x384, 384x1536, 1536x384 weights: 0.6-2.4 MB) ran
unpacked: a ``[K, N]`` weight read one cache line per row of ``K`` for every tile. Here
their packing into ``[N / P, K, P]`` panels is checked, and the numbers against
onnxruntime.
"""

from __future__ import annotations

import numpy as np
import onnx
import tvm
from onnx import TensorProto, helper, numpy_helper
from test_schedules import (
    RUN_TARGET,
    assert_matches_onnxruntime,
)
from tvm.relax.frontend.onnx import from_onnx

from optc.codegen.schedules import apply_cpu_schedules
from optc.codegen.schedules.tune import legalized

TOKENS, HIDDEN, FFN = 16, 384, 1536


def _ffn_block() -> onnx.ModelProto:
    """A transformer's feed-forward half at MiniLM's sizes: 384 -> 384 (attention output
    projection) -> 1536 (GELU via Erf) -> 384, residual add; plus a 64x8 matmul (2 KB of
    weights) that stays unpacked."""
    rng = np.random.default_rng(5)

    def w(name: str, shape: tuple[int, ...]) -> onnx.TensorProto:
        value = rng.standard_normal(shape) / np.sqrt(shape[0])
        return numpy_helper.from_array(value.astype(np.float32), name)

    inits = [
        w("wo", (HIDDEN, HIDDEN)),
        w("w1", (HIDDEN, FFN)),
        w("w2", (FFN, HIDDEN)),
        w("ws", (HIDDEN, 8)),
        w("b1", (FFN,)),
        numpy_helper.from_array(np.array(2**-0.5, np.float32), "r2"),
        numpy_helper.from_array(np.array(1.0, np.float32), "one"),
        numpy_helper.from_array(np.array(0.5, np.float32), "half"),
    ]
    n = helper.make_node
    nodes = [
        n("MatMul", ["x", "wo"], ["h"]),
        n("MatMul", ["h", "w1"], ["u0"]),
        n("Add", ["u0", "b1"], ["u"]),
        n("Mul", ["u", "r2"], ["us"]),
        n("Erf", ["us"], ["e"]),
        n("Add", ["e", "one"], ["e1"]),
        n("Mul", ["u", "e1"], ["g0"]),
        n("Mul", ["g0", "half"], ["g"]),
        n("MatMul", ["g", "w2"], ["d"]),
        n("Add", ["d", "h"], ["r"]),
        n("MatMul", ["r", "ws"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "ffn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, TOKENS, HIDDEN])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, TOKENS, 8])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_ffn_block_matches_onnxruntime() -> None:
    model = _ffn_block()
    assert_matches_onnxruntime(model)


def test_dense_weights_beyond_l1_are_packed() -> None:
    mod = legalized(from_onnx(_ffn_block(), keep_params_in_input=False), RUN_TARGET)
    with RUN_TARGET:
        mod = apply_cpu_schedules(mod, RUN_TARGET)
    funcs = {gv.name_hint: f for gv, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc)}
    packed = sorted(
        tuple(int(d) for d in f.params[1].shape) for n, f in funcs.items() if "matmul_packed" in n
    )
    # [N / P, K, P] with P = two 8-lane vectors (AVX2) or two 16-lane ones (AVX-512).
    width = packed[0][-1]
    assert width in (16, 32)
    assert packed == sorted(
        [
            (HIDDEN // width, HIDDEN, width),
            (FFN // width, HIDDEN, width),
            (HIDDEN // width, FFN, width),
        ]
    ), sorted(funcs)
    # The 384x8 weight (12 KB) stays cached unpacked.
    assert sum("matmul_packed" in n for n in funcs) == 3
    for name, func in funcs.items():
        if "matmul_packed" in name:
            assert func.attrs["tirx.is_scheduled"] and 'scope="local"' in func.script(), name
