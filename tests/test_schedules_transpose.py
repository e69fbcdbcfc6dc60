"""Layout transposes get the 2-D blocked schedule (``schedules/transpose.py``): equal to
numpy bit for bit on several shapes (block-multiple, half-block and short axes, one
declined), fused with an elementwise chain, and really blocked in the TIR."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import tvm
from onnx import TensorProto, helper, numpy_helper
from test_schedules import RUN_TARGET, compile_and_run
from tvm import s_tir, te, topi

from optc.codegen.schedules.apply import schedule_prim_func
from optc.codegen.schedules.hw import cpu_info
from optc.codegen.schedules.transpose import as_permutation

# (source shape, permutation, blocked, vectorized): NHWC -> NCHW and back, a matrix, a
# 5-D permutation, axes that are multiples of a vector, of half or a quarter of one,
# shorter than one, one (50) that no block of >= 4 divides (a partial last block, rows
# stored element by element), a 3-channel destination row (the source row is the
# vector), and a 3-channel row whose source width (30) takes no whole vectors: the
# injective rule keeps that one.
CASES = [
    ((1, 56, 56, 64), (0, 3, 1, 2), True, True),
    ((1, 64, 28, 28), (0, 2, 3, 1), True, True),
    ((1, 20, 12, 24), (0, 3, 1, 2), True, True),
    ((1, 7, 9, 6), (0, 3, 1, 2), True, True),
    ((40, 72), (1, 0), True, True),
    ((2, 8, 48, 5, 32), (0, 2, 4, 3, 1), True, True),
    ((1, 30, 50, 24), (0, 3, 1, 2), True, False),
    ((1, 50, 30, 36), (0, 3, 1, 2), True, False),
    ((1, 3, 32, 32), (0, 2, 3, 1), True, True),
    ((1, 3, 30, 30), (0, 2, 3, 1), False, False),
]


def _transpose_func(shape: tuple[int, ...], perm: tuple[int, ...], dtype: str) -> tvm.tirx.PrimFunc:
    src = te.placeholder(shape, dtype, name="src")
    return te.create_prim_func([src, topi.transpose(src, perm)])


def _run(func: tvm.tirx.PrimFunc, data: np.ndarray, out_shape: tuple[int, ...]) -> np.ndarray:
    lib = tvm.compile(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), RUN_TARGET)
    dev = tvm.cpu()
    out = tvm.runtime.tensor(np.zeros(out_shape, data.dtype), dev)
    lib["main"](tvm.runtime.tensor(data, dev), out)
    return out.numpy()


@pytest.mark.parametrize("dtype", ["float32", "uint8"])
@pytest.mark.parametrize(("shape", "perm", "blocked", "vectorized"), CASES)
def test_transpose_equals_numpy(
    shape: tuple[int, ...], perm: tuple[int, ...], blocked: bool, vectorized: bool, dtype: str
) -> None:
    func = _transpose_func(shape, perm, dtype)
    with RUN_TARGET:
        scheduled = schedule_prim_func(func, RUN_TARGET)
    assert scheduled is not None
    text = scheduled.script()
    # Blocked: the destination row of a tile is the vector, the source rows above it are
    # unrolled; declined, the injective rule's single vector loop remains.
    assert ("T.unroll(" in text) == blocked, text
    assert ("T.vectorized(" in text) == vectorized, text
    rng = np.random.default_rng(3)
    data = (
        rng.standard_normal(shape).astype(dtype)
        if dtype == "float32"
        else rng.integers(0, 256, shape).astype(dtype)
    )
    expected = np.transpose(data, perm)
    np.testing.assert_array_equal(_run(scheduled, data, expected.shape), expected)


def test_tile_is_lanes_by_lanes_with_the_source_block_inside() -> None:
    """VGG's stem output back to NCHW: 16 x 16 float tiles on AVX-512 (8 x 8 on AVX2),
    the loop over source rows (channels) inside the one over destination blocks."""
    func = _transpose_func((1, 224, 224, 64), (0, 3, 1, 2), "float32")
    with RUN_TARGET:
        scheduled = schedule_prim_func(func, RUN_TARGET)
    assert scheduled is not None
    sch = s_tir.Schedule(scheduled)
    loops = [sch.get(lp) for lp in sch.get_loops(sch.get_sblock("T_transpose"))]
    lanes = cpu_info(RUN_TARGET).lanes(32)
    assert [int(lp.extent) for lp in loops[-2:]] == [lanes, lanes]
    assert loops[-1].kind == tvm.tirx.ForKind.VECTORIZED
    assert loops[-2].kind == tvm.tirx.ForKind.UNROLLED
    assert int(loops[-3].extent) == 64 // lanes  # channel blocks
    assert any(lp.kind == tvm.tirx.ForKind.PARALLEL for lp in loops)


def test_elementwise_broadcast_is_not_a_transpose() -> None:
    """An add of a per-channel vector reads its last axis at the channel iterator but
    never the destination's innermost one: no permutation, no blocking."""
    a = te.placeholder((1, 8, 8, 32), "float32", name="a")
    b = te.placeholder((32,), "float32", name="b")
    func = te.create_prim_func([a, b, topi.add(a, b)])
    sch = s_tir.Schedule(func)
    (block,) = [sch.get_sblock("T_add")]
    assert as_permutation(sch, block) is None


def _fused_model() -> onnx.ModelProto:
    """NHWC -> NCHW of a 32-channel map, scaled and clipped by ReLU: TVM fuses the
    elementwise chain with the transpose into one kernel."""
    n = helper.make_node
    nodes = [
        n("Transpose", ["x"], ["t"], perm=[0, 3, 1, 2]),
        n("Mul", ["t", "s"], ["m"]),
        n("Relu", ["m"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "fused_transpose",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 40, 48, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32, 40, 48])],
        [numpy_helper.from_array(np.array(0.5, np.float32), "s")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_fused_elementwise_transpose_is_exact() -> None:
    x = np.random.default_rng(5).standard_normal((1, 40, 48, 32)).astype(np.float32)
    (actual,) = compile_and_run(_fused_model(), {"x": x})
    # x * 0.5 is exact in float32, as is the ReLU: the result must equal bit for bit.
    np.testing.assert_array_equal(actual, np.maximum(np.transpose(x, (0, 3, 1, 2)) * 0.5, 0))
