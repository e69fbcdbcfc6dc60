"""Global average pooling over channels-last maps accumulates whole channel vectors.

SqueezeNet ends in ``conv -> ReLU -> GlobalAveragePool`` on 13x13x1000; channels-last,
that ``mean`` over H and W is a reduction whose output axis (the channel) is the input's
contiguous one. The row rule (``rowreduce.py``) used to take it (one strided scalar sum
per channel); it now leaves it to the spatial vector reduction (``reduction.py``).
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import tvm
from onnx import TensorProto, helper, numpy_helper
from test_schedules import (
    RUN_TARGET,
    assert_matches_onnxruntime,
)
from tvm.relax.frontend.onnx import from_onnx

from optc.codegen.schedules import apply_cpu_schedules
from optc.codegen.schedules.tune import legalized

CHANNELS = 1000


def _pool_model(op: str) -> onnx.ModelProto:
    rng = np.random.default_rng(11)
    weight = rng.standard_normal((CHANNELS, 32, 1, 1)) * np.sqrt(2.0 / 32)
    inits = [numpy_helper.from_array(weight.astype(np.float32), "w")]
    n = helper.make_node
    pool = (
        n("GlobalAveragePool", ["r"], ["p"])
        if op == "GlobalAveragePool"
        else n("ReduceMean", ["r"], ["p"], axes=[2, 3], keepdims=1)
    )
    nodes = [n("Conv", ["x", "w"], ["c"]), n("Relu", ["c"], ["r"]), pool]
    graph = helper.make_graph(
        nodes,
        "pool",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 32, 13, 13])],
        [helper.make_tensor_value_info("p", TensorProto.FLOAT, [1, CHANNELS, 1, 1])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("op", ["GlobalAveragePool", "ReduceMean"])
def test_global_pool_matches_onnxruntime(op: str) -> None:
    model = _pool_model(op)
    assert_matches_onnxruntime(model)


@pytest.mark.parametrize("op", ["GlobalAveragePool", "ReduceMean"])
def test_global_pool_accumulates_channel_vectors(op: str) -> None:
    mod = legalized(from_onnx(_pool_model(op), keep_params_in_input=False), RUN_TARGET)
    with RUN_TARGET:
        mod = apply_cpu_schedules(mod, RUN_TARGET)
    means = [
        f
        for gv, f in mod.functions_items()
        if isinstance(f, tvm.tirx.PrimFunc) and "_red_update" in f.script()
    ]
    assert len(means) == 1
    text = means[0].script()
    # The update runs on channel vectors, under the 13x13 reduction loops.
    update = text[text.index('T.sblock("') :]
    assert "T.vectorized(" in text
    assert "for ax1, ax2 in T.grid(T.int64(13), T.int64(13)):" in update, text
