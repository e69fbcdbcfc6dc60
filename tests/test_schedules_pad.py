"""Zero padding of a convolution's input under the contraction rule: made inside each
output tile for a strided depthwise conv (``contraction.pad_in_tile_default``), as a
padded copy before the kernel otherwise; both match onnxruntime, and the tuner may pick
either (``space.variants``). (Depthwise convs with whole 4-lane channel vectors get
``depthwise.py``'s rule, which reads the input through the padding condition.)"""

from __future__ import annotations

import numpy as np
import onnx
import tvm
from onnx import TensorProto, helper, numpy_helper
from test_schedules import (
    RUN_TARGET,
    assert_matches_onnxruntime,
)
from tvm import s_tir
from tvm.relax.frontend.onnx import from_onnx

from optc.codegen.schedules import apply_cpu_schedules
from optc.codegen.schedules.apply import schedule_contraction_with
from optc.codegen.schedules.contraction import Knobs
from optc.codegen.schedules.hw import cpu_info
from optc.codegen.schedules.space import has_pad, variants
from optc.codegen.schedules.tune import legalized


def _depthwise(stride: int) -> onnx.ModelProto:
    """EfficientNet's depthwise 3x3 conv (96 channels) with bias and ReLU."""
    rng = np.random.default_rng(stride)
    channels, size = 96, 80  # stride 2: 1.4 M multiply-adds, a parallel kernel
    out = (size + 2 - 3) // stride + 1
    inits = [
        numpy_helper.from_array(rng.standard_normal((channels, 1, 3, 3)).astype(np.float32), "w"),
        numpy_helper.from_array(rng.standard_normal(channels).astype(np.float32), "b"),
    ]
    n = helper.make_node
    nodes = [
        n(
            "Conv",
            ["x", "w", "b"],
            ["c"],
            group=channels,
            pads=[1, 1, 1, 1],
            strides=[stride, stride],
        ),
        n("Relu", ["c"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "depthwise",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels, size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, channels, out, out])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _conv_func(model: onnx.ModelProto, scheduled: bool) -> tvm.tirx.PrimFunc:
    mod = legalized(from_onnx(model, keep_params_in_input=False), RUN_TARGET)
    if scheduled:
        with RUN_TARGET:
            mod = apply_cpu_schedules(mod, RUN_TARGET)
    (func,) = [f for gv, f in mod.functions_items() if "conv2d" in gv.name_hint]
    return func


def _contraction_scheduled(model: onnx.ModelProto) -> str:
    """The conv under the contraction rule with its default knobs (depthwise convs get
    ``depthwise.py``'s rule in a build; the contraction rule still serves the ones that
    rule declines, e.g. channels not a multiple of 4)."""
    sch = s_tir.Schedule(_conv_func(model, scheduled=False))
    assert schedule_contraction_with(sch, cpu_info(RUN_TARGET), Knobs())
    return sch.mod["main"].script()


def test_strided_depthwise_pads_inside_the_tile() -> None:
    strided = _contraction_scheduled(_depthwise(2))
    plain = _contraction_scheduled(_depthwise(1))
    # Inside the tile the pad is no parallel loop of its own; before the kernel it is.
    assert strided.count("T.parallel(") == 1, strided
    assert plain.count("T.parallel(") == 2, plain
    for stride in (1, 2):
        model = _depthwise(stride)
        assert_matches_onnxruntime(model)


def test_padded_kernels_get_both_pad_variants() -> None:
    cpu = cpu_info(RUN_TARGET)
    func = _conv_func(_depthwise(2), scheduled=False)
    assert has_pad(func)
    found = variants(10_000_000, cpu, pad=True)
    assert {k.pad_in_tile for k in found} == {None, True, False}
    assert found[0].pad_in_tile is None  # the default structure comes first
