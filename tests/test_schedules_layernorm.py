"""Row-wise reductions (LayerNormalization, Softmax, ReduceMean over the last axis) on the
CPU schedules: numerics against onnxruntime, and that a single row (``[1, N]``) is not
scheduled as a per-element recomputation of its mean / max / sum (O(N^2))."""

from __future__ import annotations

import math

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tvm
from onnx import TensorProto, helper, numpy_helper
from tvm import relax, tirx
from tvm.relax.frontend.onnx import from_onnx

from optc.codegen import host_target
from optc.codegen.schedules import apply_cpu_schedules, cpu_pipeline
from optc.codegen.schedules.rowreduce import loop_volume
from optc.codegen.schedules.tune import legalized

TARGET = tvm.target.Target(host_target())
SHAPES = [(1, 1024), (1, 2048), (1, 1, 1024), (8, 1024), (1, 128, 384), (1, 1000)]
OPS = ["LayerNormalization", "Softmax", "ReduceMean"]


def row_model(op: str, shape: tuple[int, ...], axis: int = -1, seed: int = 0) -> onnx.ModelProto:
    """One ``op`` over ``axis`` (LayerNormalization: the axes from it on) of a float input
    of ``shape`` (opset 17)."""
    norm_shape = shape[axis:]
    out_shape = list(shape)
    rng = np.random.default_rng(seed)
    inits = []
    if op == "LayerNormalization":
        node = helper.make_node(op, ["x", "scale", "bias"], ["y"], axis=axis, epsilon=1e-5)
        inits = [
            numpy_helper.from_array(rng.uniform(0.5, 1.5, norm_shape).astype(np.float32),
                                    "scale"),
            numpy_helper.from_array(rng.standard_normal(norm_shape).astype(np.float32), "bias"),
        ]
    elif op == "Softmax":
        node = helper.make_node(op, ["x"], ["y"], axis=axis)
    else:
        node = helper.make_node(op, ["x"], ["y"], axes=[axis], keepdims=1)
        out_shape[axis] = 1
    graph = helper.make_graph(
        [node], f"{op}_{'x'.join(map(str, shape))}",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def scheduled(model: onnx.ModelProto) -> tvm.IRModule:
    """The model's TIR functions as optc's CPU schedules leave them."""
    return apply_cpu_schedules(legalized(from_onnx(model, keep_params_in_input=False), TARGET),
                               TARGET)


def block_volumes(func: tirx.PrimFunc) -> dict[str, int]:
    """How many times each block of a scheduled function runs."""
    sch = tvm.s_tir.Schedule(func)
    volumes = {}
    for block in sch.get_child_blocks(sch.get_sblock("root")):
        volume = loop_volume(sch, block)
        name = sch.get(block).name_hint
        assert volume is not None, f"block {name} has a dynamic loop"
        volumes[name] = volume
    return volumes


def vectorized_blocks(func: tirx.PrimFunc) -> set[str]:
    """Names of the blocks under a vectorized loop."""
    sch = tvm.s_tir.Schedule(func)
    return {
        sch.get(block).name_hint
        for block in sch.get_child_blocks(sch.get_sblock("root"))
        if any(sch.get(loop).kind == tirx.ForKind.VECTORIZED for loop in sch.get_loops(block))
    }


@pytest.mark.parametrize(
    "shape", [(1, 1024), (1, 1, 2048), (8, 1024), (1, 128, 384), (1, 1000), (4, 1000)]
)
@pytest.mark.parametrize("op", OPS)
def test_no_block_runs_more_than_its_input(op: str, shape: tuple[int, ...]) -> None:
    """No block may run more often than there are input elements: computing a row's mean
    (or max, or sum) once per output element would run N * N times on a ``[1, N]`` row."""
    mod = scheduled(row_model(op, shape))
    funcs = [f for _, f in mod.functions_items() if isinstance(f, tirx.PrimFunc)]
    assert funcs
    numel = math.prod(shape)
    for func in funcs:
        assert func.attrs is not None and func.attrs["tirx.is_scheduled"]
        volumes = block_volumes(func)
        assert volumes
        too_many = {name: v for name, v in volumes.items() if v > numel}
        assert not too_many, f"{op}{list(shape)}: blocks recompute per element: {too_many}"


@pytest.mark.parametrize("shape", [(1, 1024), (1, 1, 2048), (8, 1024), (1, 128, 384)])
@pytest.mark.parametrize("op", OPS)
def test_reductions_are_vectorized(op: str, shape: tuple[int, ...]) -> None:
    """Each row's reductions run once over the row on SIMD vectors of partial results
    (rfactor), a single row included."""
    mod = scheduled(row_model(op, shape))
    func = next(f for _, f in mod.functions_items() if isinstance(f, tirx.PrimFunc))
    volumes = block_volumes(func)
    partials = [name for name in volumes if name.endswith("_rf_update")]
    # LayerNorm: sum and variance; Softmax: max and sum of exp; ReduceMean: the sum.
    assert len(partials) == {"LayerNormalization": 2, "Softmax": 2, "ReduceMean": 1}[op]
    for name in partials:
        assert volumes[name] == math.prod(shape)
    assert set(partials) <= vectorized_blocks(func)


def _run_tvm(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    mod = from_onnx(model, keep_params_in_input=False)
    executable = tvm.compile(mod, TARGET, relax_pipeline=cpu_pipeline(TARGET))
    vm = relax.VirtualMachine(executable, tvm.cpu())
    out = vm["main"](tvm.runtime.tensor(x))
    return (out if hasattr(out, "numpy") else out[0]).numpy()


# Reductions over other axes; LayerNormalization at axis 0 reduces the whole tensor into
# a 0-d buffer.
OTHER_AXES = [
    (op, shape, axis)
    for op in OPS
    for shape, axis in [((2, 64, 48), 1), ((64, 64), 0), ((4, 8, 64), -2)]
]


@pytest.mark.parametrize(
    "op,shape,axis", [(op, shape, -1) for op in OPS for shape in SHAPES] + OTHER_AXES
)
def test_matches_onnxruntime(op: str, shape: tuple[int, ...], axis: int) -> None:
    """Numerics against onnxruntime; the other axes check that a reduction which is not
    over the innermost axis still gets a correct (if unvectorized) schedule."""
    model = row_model(op, shape, axis)
    x = (np.random.default_rng(1).standard_normal(shape) * 3 + 0.5).astype(np.float32)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    expected = session.run(None, {"x": x})[0]
    actual = _run_tvm(model, x)
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("op", OPS)
def test_rows_run_in_parallel_only_when_it_pays(op: str) -> None:
    """MiniLM's 128 rows of 384 are worth the thread launch; one row of 1024 is not."""
    for shape, parallel in [((1, 128, 384), True), ((1, 1024), False)]:
        mod = scheduled(row_model(op, shape))
        func = next(f for _, f in mod.functions_items() if isinstance(f, tirx.PrimFunc))
        sch = tvm.s_tir.Schedule(func)
        kinds = {
            sch.get(loop).kind
            for block in sch.get_child_blocks(sch.get_sblock("root"))
            for loop in sch.get_loops(block)
        }
        assert (tirx.ForKind.PARALLEL in kinds) == parallel, (op, shape)


def dense_layernorm_model(n: int, batch: int = 1, k: int = 256) -> onnx.ModelProto:
    """``relu(LayerNorm(x @ w + b))``: the batch-1 MLP layer whose fused layer norm (with
    the ReLU as its epilogue) used to be quadratic in the width."""
    rng = np.random.default_rng(2)
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"]),
        helper.make_node("Add", ["h", "b"], ["hb"]),
        helper.make_node("LayerNormalization", ["hb", "scale", "bias"], ["ln"], axis=-1),
        helper.make_node("Relu", ["ln"], ["y"]),
    ]
    inits = [
        numpy_helper.from_array((rng.standard_normal((k, n)) / 16).astype(np.float32), "w"),
        numpy_helper.from_array(rng.standard_normal(n).astype(np.float32), "b"),
        numpy_helper.from_array(rng.uniform(0.5, 1.5, n).astype(np.float32), "scale"),
        numpy_helper.from_array(rng.standard_normal(n).astype(np.float32), "bias"),
    ]
    graph = helper.make_graph(
        nodes, "dense_layernorm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, n])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("batch", [1, 8])
def test_fused_dense_layernorm(batch: int) -> None:
    n = 1024
    model = dense_layernorm_model(n, batch)
    norms = {
        gv.name_hint: f for gv, f in scheduled(model).functions_items()
        if isinstance(f, tirx.PrimFunc) and "layer_norm" in gv.name_hint
    }
    assert norms
    for name, func in norms.items():
        volumes = block_volumes(func)
        assert max(volumes.values()) <= batch * n, (name, volumes)
    x = np.random.default_rng(3).standard_normal((batch, 256)).astype(np.float32)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(_run_tvm(model, x), session.run(None, {"x": x})[0],
                               rtol=1e-4, atol=1e-4)
