"""Concatenations along the channel axis are split into one vectorized copy per input.

Channels-last, a ``Concat`` over channels is ``if_then_else(64 <= c, b[.., c - 64],
a[.., c])`` in its innermost loop; vectorized as is, LLVM scalarized it (a branch and a
load per element). ``loops.py`` splits the channel loop at the boundaries instead.
Checked here on DenseNet's shape (a concat feeding BatchNorm + ReLU, fused) and
SqueezeNet's / Inception's (a plain concat of three branches), against onnxruntime.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import tvm
from onnx import TensorProto, helper, numpy_helper
from test_schedules import (
    RUN_TARGET,
    assert_close,
    compile_and_run,
    onnxruntime_outputs,
    random_inputs,
)
from tvm.relax.frontend.onnx import from_onnx

from optc.codegen.schedules import apply_cpu_schedules
from optc.codegen.schedules.hw import cpu_info
from optc.codegen.schedules.tune import legalized


def _concat_model() -> onnx.ModelProto:
    """Three conv branches (64, 32 and 96 channels: a 32-channel boundary is 4 AVX2
    vectors) concatenated, BatchNorm + ReLU on the concat (DenseNet), a second concat
    with the raw 32-channel branch (fused with the first: boundaries at 64, 96 and 192
    channels), then pooling and a conv, so that the layout stays channels-last."""
    rng = np.random.default_rng(7)

    def w(name: str, shape: tuple[int, ...]) -> onnx.TensorProto:
        value = rng.standard_normal(shape) * np.sqrt(2.0 / np.prod(shape[1:]))
        return numpy_helper.from_array(value.astype(np.float32), name)

    def vec(name: str, n: int, lo: float = -1.0, hi: float = 1.0) -> onnx.TensorProto:
        return numpy_helper.from_array(rng.uniform(lo, hi, n).astype(np.float32), name)

    inits = [
        w("wa", (64, 16, 1, 1)),
        w("wb", (32, 16, 3, 3)),
        w("wc", (96, 16, 1, 1)),
        w("wo", (8, 224, 1, 1)),
        vec("scale", 192),
        vec("bias", 192),
        vec("mean", 192),
        vec("var", 192, 0.5, 1.5),
    ]
    n = helper.make_node
    nodes = [
        n("Conv", ["x", "wa"], ["a"]),
        n("Conv", ["x", "wb"], ["b"], pads=[1, 1, 1, 1]),
        n("Conv", ["x", "wc"], ["c"]),
        n("Concat", ["a", "b", "c"], ["abc"], axis=1),
        n("BatchNormalization", ["abc", "scale", "bias", "mean", "var"], ["bn"]),
        n("Relu", ["bn"], ["r"]),
        n("Concat", ["r", "b"], ["rb"], axis=1),
        n("MaxPool", ["rb"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
        n("Conv", ["p", "wo"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "concat",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 20, 20])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 10, 10])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture(scope="module")
def concat_funcs() -> dict[str, tvm.tirx.PrimFunc]:
    mod = legalized(from_onnx(_concat_model(), keep_params_in_input=False), RUN_TARGET)
    with RUN_TARGET:
        mod = apply_cpu_schedules(mod, RUN_TARGET)
    return {
        gv.name_hint: f
        for gv, f in mod.functions_items()
        if isinstance(f, tvm.tirx.PrimFunc) and "concatenate" in gv.name_hint
    }


def test_concatenations_match_onnxruntime() -> None:
    model = _concat_model()
    feeds = random_inputs(model)
    (expected,) = onnxruntime_outputs(model, feeds)
    (actual,) = compile_and_run(model, feeds)
    assert actual.shape == expected.shape
    assert_close(actual, expected)


def test_each_input_gets_its_own_vector_loop(concat_funcs: dict[str, tvm.tirx.PrimFunc]) -> None:
    assert len(concat_funcs) == 1, sorted(concat_funcs)
    (func,) = concat_funcs.values()
    text = func.script()
    assert func.attrs["tirx.is_scheduled"] and "T.parallel(" in text
    # One vectorized loop per channel range: [0, 64), [64, 96), [96, 192), [192, 224).
    assert text.count("_partition") == 4 and text.count("T.vectorized(") == 4, text


def test_concat_machine_code_moves_whole_vectors(
    concat_funcs: dict[str, tvm.tirx.PrimFunc],
) -> None:
    ((name, func),) = concat_funcs.items()
    lib = tvm.compile(tvm.IRModule({name: func.with_attr("global_symbol", name)}), RUN_TARGET)
    llvm_ir = lib.mod.inspect_source("ll")
    lanes = cpu_info(RUN_TARGET).lanes(32)
    assert f"load <{lanes} x float>" in llvm_ir and f"store <{lanes} x float>" in llvm_ir
