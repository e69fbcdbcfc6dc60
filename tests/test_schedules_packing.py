"""Packed conv2d weight panels, channel shuffles and BN-style constants in the CPU schedules.

Each test compiles a small ONNX model through ``cpu_pipeline`` and compares it with
onnxruntime, and checks the structure the rewrite is for (packed 5-D weights, a shuffle
kernel without per-lane div/mod, no layout transposes around per-channel constants).
"""

from __future__ import annotations

import re

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
from optc.codegen.schedules.contraction import Knobs, serial_tile_loops
from optc.codegen.schedules.conv_pack import pack_weight, padded_channels, panel_width
from optc.codegen.schedules.hw import cpu_info
from optc.codegen.schedules.tune import legalized


def _weight(rng: np.random.Generator, name: str, shape: tuple[int, ...]) -> onnx.TensorProto:
    value = rng.standard_normal(shape) * np.sqrt(2.0 / np.prod(shape[1:]))
    return numpy_helper.from_array(value.astype(np.float32), name)


def _model(
    nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto], x: list[int], y: list[int]
) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "block",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, y)],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _scheduled(model: onnx.ModelProto) -> tvm.IRModule:
    mod = legalized(from_onnx(model, keep_params_in_input=False), RUN_TARGET)
    with RUN_TARGET:
        return apply_cpu_schedules(mod, RUN_TARGET)


def _prim_funcs(mod: tvm.IRModule) -> dict[str, tvm.tirx.PrimFunc]:
    return {gv.name_hint: f for gv, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc)}


def test_pack_weight_puts_each_panel_contiguous() -> None:
    w = np.arange(3 * 3 * 5 * 32, dtype=np.float32).reshape(3, 3, 5, 32)
    packed = pack_weight(w, 16)
    assert packed.shape == (2, 3, 3, 5, 16)
    for f in (0, 7, 16, 31):
        np.testing.assert_array_equal(packed[f // 16, ..., f % 16], w[..., f])
    assert panel_width(64, 8) == 16
    assert panel_width(24, 8) == 24  # three vectors where two do not divide
    assert panel_width(72, 8) == 24
    assert panel_width(40, 8) == 40  # five vectors: a 2x5 register tile
    assert panel_width(56, 8) == 8  # one vector where neither two, three nor five divide
    assert panel_width(1000, 8) == 40  # a 1000-class matmul: 1x5 tiles, not 1x1
    assert panel_width(1000, 16) is None  # not a whole number of 16-lane vectors
    assert panel_width(12, 8) is None


def _conv_stack() -> onnx.ModelProto:
    """Convolutions of every geometry the packing takes: 7x7 stride 2 with 3 input
    channels, 3x3 padded, dilated, 1x1 with output channels that are not a multiple of
    16 (24, 40), a grouped 3x3, bias + ReLU epilogues, and a MatMul on a constant."""
    rng = np.random.default_rng(0)
    inits = [
        _weight(rng, "w0", (32, 3, 7, 7)),
        _weight(rng, "w1", (48, 32, 3, 3)),
        _weight(rng, "w2", (24, 48, 3, 3)),
        _weight(rng, "w3", (40, 24, 1, 1)),
        _weight(rng, "wg", (64, 20, 3, 3)),  # 2 groups of 20 -> 32 channels
        _weight(rng, "wm", (64 * 23 * 23, 32)),  # 1.1 M weights: packed
        numpy_helper.from_array(rng.standard_normal(32).astype(np.float32), "b0"),
        numpy_helper.from_array(rng.standard_normal(40).astype(np.float32), "b3"),
    ]
    n = helper.make_node
    nodes = [
        n("Conv", ["x", "w0", "b0"], ["c0"], strides=[2, 2], pads=[3, 3, 3, 3]),
        n("Relu", ["c0"], ["r0"]),
        n("Conv", ["r0", "w1"], ["c1"], pads=[1, 1, 1, 1]),
        n("Relu", ["c1"], ["r1"]),
        n("Conv", ["r1", "w2"], ["c2"], pads=[2, 2, 2, 2], dilations=[2, 2]),
        n("Conv", ["c2", "w3", "b3"], ["c3"]),
        n("Conv", ["c3", "wg"], ["c4"], group=2, pads=[1, 1, 1, 1]),
        n("Flatten", ["c4"], ["flat"]),
        n("MatMul", ["flat", "wm"], ["y"]),
    ]
    return _model(nodes, inits, [1, 3, 45, 45], [1, 32])


def test_packed_convolutions_match_onnxruntime() -> None:
    model = _conv_stack()
    assert_matches_onnxruntime(model)


def test_convolution_weights_are_packed_in_panels() -> None:
    funcs = _prim_funcs(_scheduled(_conv_stack()))
    packed = {n: f for n, f in funcs.items() if "conv2d_packed" in n}
    dense = [f for n, f in funcs.items() if "matmul_packed" in n]
    assert len(dense) == 1 and [int(d) for d in dense[0].params[1].shape][1] == 64 * 23 * 23
    # The 1x1 conv (0.5 M multiply-adds) is small enough to stay unpacked; so is the
    # 24-channel one where a vector has 16 lanes (AVX-512).
    lanes = cpu_info(RUN_TARGET).lanes(32)
    expected = sum(panel_width(f, lanes) is not None for f in (32, 48, 24, 32))
    assert len(packed) == expected, sorted(funcs)
    assert any(re.match(r"fused_conv2d\d*_add", n) for n in funcs), sorted(funcs)
    for name, func in packed.items():
        weight = func.params[1]
        shape = [int(d) for d in weight.shape]
        assert len(shape) == 5 and shape[-1] % 8 == 0, (name, shape)  # [F/P, KH, KW, C, P]
        text = func.script()
        assert func.attrs["tirx.is_scheduled"] and "T.vectorized(" in text, name
        assert 'scope="local"' in text, name  # register-blocked like any contraction


def _shuffle_model() -> onnx.ModelProto:
    """ShuffleNet's unit: a grouped 1x1 conv with groups of 68 channels (padded to whole
    vectors, then sliced), ReLU, a channel shuffle (Reshape/Transpose/Reshape) and the
    depthwise conv that reads it channels-last."""
    rng = np.random.default_rng(1)
    groups, per_group = 4, 68
    channels = groups * per_group
    inits = [
        _weight(rng, "w", (channels, per_group, 1, 1)),
        _weight(rng, "w_dw", (channels, 1, 3, 3)),
        numpy_helper.from_array(rng.standard_normal(channels).astype(np.float32), "b"),
        numpy_helper.from_array(np.array([1, groups, per_group, 14, 14], np.int64), "s5"),
        numpy_helper.from_array(np.array([1, channels, 14, 14], np.int64), "s4"),
    ]
    n = helper.make_node
    nodes = [
        n("Conv", ["x", "w", "b"], ["c"], group=groups),
        n("Relu", ["c"], ["r"]),
        n("Reshape", ["r", "s5"], ["r5"]),
        n("Transpose", ["r5"], ["t5"], perm=[0, 2, 1, 3, 4]),
        n("Reshape", ["t5", "s4"], ["shuffled"]),
        n("Conv", ["shuffled", "w_dw"], ["y"], group=channels, pads=[1, 1, 1, 1]),
    ]
    return _model(nodes, inits, [1, channels, 14, 14], [1, channels, 14, 14])


def test_channel_shuffle_matches_onnxruntime() -> None:
    model = _shuffle_model()
    assert_matches_onnxruntime(model)


def test_group_slice_is_split_by_group_not_gathered() -> None:
    """The kernel that slices the padded groups reads at ``c // 68`` and ``c % 68``:
    split by 68, its 4-lane vectors index the padded output directly (68 is no multiple
    of 8 or 16: unsplit, every lane computed its own div/mod and gathered)."""
    funcs = _prim_funcs(_scheduled(_shuffle_model()))
    sliced = [f for n, f in funcs.items() if "strided_slice" in n and "transpose" in n]
    assert sliced, sorted(funcs)
    for func in sliced:
        text = func.script()
        assert "T.vectorized(T.int64(4))" in text, text


def test_groups_of_three_vectors_get_three_vector_panels() -> None:
    """ShuffleNet's groups of 68 channels, padded to 72: on AVX2 (8 lanes) a panel of
    three vectors instead of one, so the register tile spans three (4x3, not 7x1)."""
    lanes = cpu_info(RUN_TARGET).lanes(32)
    funcs = _prim_funcs(_scheduled(_shuffle_model()))
    convs = [f for n, f in funcs.items() if "conv2d_packed" in n]
    assert len(convs) == 1, sorted(funcs)
    width = int(convs[0].params[1].shape[-1])
    assert width % lanes == 0
    if lanes == 8:
        assert width == 24
        text = convs[0].script()
        assert "T.unroll(T.int64(3))" in text and "T.vectorized(T.int64(8))" in text, text


def _groups_of_40_model() -> onnx.ModelProto:
    """ShuffleNet's 28x28 grouped 1x1 conv: 4 groups of 34 input and 40 output channels."""
    rng = np.random.default_rng(4)
    inits = [
        _weight(rng, "w", (160, 34, 1, 1)),
        numpy_helper.from_array(rng.standard_normal(160).astype(np.float32), "b"),
    ]
    n = helper.make_node
    nodes = [n("Conv", ["x", "w", "b"], ["c"], group=4), n("Relu", ["c"], ["y"])]
    return _model(nodes, inits, [1, 136, 28, 28], [1, 160, 28, 28])


def test_groups_of_five_vectors_get_a_two_by_five_tile() -> None:
    """On AVX2, groups of 40 channels get 40-wide panels and a 2x5 register tile (seven
    loads per ten FMAs) instead of 10x1 (eleven per ten); the result is unchanged."""
    model = _groups_of_40_model()
    lanes = cpu_info(RUN_TARGET).lanes(32)
    funcs = _prim_funcs(_scheduled(model))
    convs = [f for n, f in funcs.items() if "conv2d_packed" in n]
    assert len(convs) == 1, sorted(funcs)
    if lanes == 8:
        assert int(convs[0].params[1].shape[-1]) == 40
        text = convs[0].script()
        assert "T.unroll(T.int64(5))" in text and "T.unroll(T.int64(2))" in text, text
    assert_matches_onnxruntime(model)


def _bn_after_conv_model() -> onnx.ModelProto:
    """Conv + bias, then a per-channel scale and shift given as ``[C, 1, 1]`` constants
    (a BatchNormalization folded into Mul/Add, as in Inception v2)."""
    rng = np.random.default_rng(2)
    inits = [
        _weight(rng, "w", (32, 16, 3, 3)),
        numpy_helper.from_array(rng.standard_normal(32).astype(np.float32), "b"),
        numpy_helper.from_array(rng.uniform(0.5, 1.5, (32, 1, 1)).astype(np.float32), "s"),
        numpy_helper.from_array(rng.standard_normal((32, 1, 1)).astype(np.float32), "t"),
    ]
    n = helper.make_node
    nodes = [
        n("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        n("Mul", ["c", "s"], ["m"]),
        n("Add", ["m", "t"], ["a"]),
        n("Relu", ["a"], ["y"]),
    ]
    return _model(nodes, inits, [1, 16, 20, 20], [1, 32, 20, 20])


def test_channel_constants_keep_channels_last() -> None:
    model = _bn_after_conv_model()
    funcs = _prim_funcs(_scheduled(model))
    # Only the input and output layout changes remain; the scale and shift are fused
    # into the convolution's epilogue.
    assert len([n for n in funcs if "transpose" in n]) <= 2, sorted(funcs)
    assert any("conv2d" in n and "multiply" in n for n in funcs), sorted(funcs)
    assert_matches_onnxruntime(model)


def _odd_channels_model() -> onnx.ModelProto:
    """A 1x1 conv to 250 channels (SqueezeNet's classifier has 1000): no whole number of
    8- or 16-lane vectors."""
    rng = np.random.default_rng(3)
    inits = [
        _weight(rng, "w", (250, 64, 1, 1)),
        numpy_helper.from_array(rng.standard_normal(250).astype(np.float32), "b"),
    ]
    n = helper.make_node
    nodes = [n("Conv", ["x", "w", "b"], ["c"]), n("Relu", ["c"], ["y"])]
    return _model(nodes, inits, [1, 64, 13, 13], [1, 250, 13, 13])


def test_odd_channel_count_is_padded_to_whole_vectors() -> None:
    """The conv computes 256 channels on a packed weight (zero panels appended) and its
    epilogue slices the 250 real ones out, in the same kernel."""
    assert padded_channels(250, 16) == 256 and padded_channels(250, 8) == 256
    assert padded_channels(256, 16) is None  # already whole vectors
    assert padded_channels(40, 16) is None  # 64 would waste 24 of 40
    # AVX2: 1000 is whole 8-lane vectors but not whole 64-byte lines (two vectors)
    assert padded_channels(1000, 8) == 1008 and padded_channels(1008, 16) is None
    assert padded_channels(24, 8) is None  # 32 would waste 8 of 24
    model = _odd_channels_model()
    funcs = _prim_funcs(_scheduled(model))
    fused = [f for n, f in funcs.items() if "conv2d_packed" in n and "strided_slice" in n]
    assert len(fused) == 1, sorted(funcs)
    panels, _, _, _, width = (int(d) for d in fused[0].params[1].shape)
    assert panels * width == 256
    assert_matches_onnxruntime(model)


def _residual_expand_model() -> onnx.ModelProto:
    """ResNet-50's expand conv on a 28x28 map: 1x1, 64 -> 256 channels, bias, the
    shortcut (another 1x1 conv) added, ReLU; 12.8 M multiply-adds each, so parallel."""
    rng = np.random.default_rng(5)
    inits = [
        _weight(rng, "w", (256, 64, 1, 1)),
        _weight(rng, "ws", (256, 64, 1, 1)),
        numpy_helper.from_array(rng.standard_normal(256).astype(np.float32), "b"),
    ]
    n = helper.make_node
    nodes = [
        n("Conv", ["x", "w", "b"], ["c"]),
        n("Conv", ["x", "ws"], ["s"]),
        n("Add", ["c", "s"], ["a"]),
        n("Relu", ["a"], ["y"]),
    ]
    return _model(nodes, inits, [1, 64, 28, 28], [1, 256, 28, 28])


def test_serial_tile_loops_leave_enough_even_parallel_iterations() -> None:
    # ResNet-50's 56x56 expand conv on 2 cores: 16 panels x 1 x 56 rows x 10 row tiles;
    # the 16 panels alone are 8 parallel iterations per core.
    assert serial_tile_loops([16, 1, 56, 10], 2) == 3
    assert serial_tile_loops([128, 1, 7, 2], 2) == 3
    # 21 iterations on 2 cores leave one core idle for 1/21 of the kernel: all 42 stay.
    assert serial_tile_loops([3, 7, 2], 2) == 0
    assert serial_tile_loops([2, 14, 3], 2) == 1  # 2 alone are too few
    assert serial_tile_loops([64], 2) == 0  # one loop stays parallel


def test_parallel_tiles_run_in_serial_chunks() -> None:
    """A parallel conv's tile loops beyond a few iterations per core run serially inside
    each parallel iteration: the register tile's buffer (TVM allocates it per parallel
    iteration from the workspace pool) is taken once per chunk, not once per tile."""
    model = _residual_expand_model()
    cpu = cpu_info(RUN_TARGET)
    funcs = _prim_funcs(_scheduled(model))
    convs = [f for n, f in funcs.items() if "conv2d_packed" in n and "add" in n]
    assert convs, sorted(funcs)
    if cpu.cores > 1:
        for func in convs:
            text = func.script()
            extents = [int(e) for e in re.findall(r"T\.parallel\(T\.int64\((\d+)\)\)", text)]
            assert len(extents) == 1, text
            # At least 8 x 28 x 5 tiles (256 channels in tiles of 32, 28 rows by 6 or
            # fewer): far more than the parallel iterations.
            assert 4 * cpu.cores <= extents[0] <= 256, extents
    assert_matches_onnxruntime(model)


def test_panel_blocks_compute_the_same_conv() -> None:
    """``Knobs.panel_block`` (off by default) reorders the tile loops into blocks of
    panels; the kernel computes the same values as the default order."""
    mod = legalized(from_onnx(_residual_expand_model(), keep_params_in_input=False), RUN_TARGET)
    funcs = [f for gv, f in mod.functions_items() if "conv2d_packed" in gv.name_hint]
    assert funcs, [gv.name_hint for gv, _ in mod.functions_items()]
    func = funcs[0]
    cpu = cpu_info(RUN_TARGET)
    rng = np.random.default_rng(6)
    args = [
        rng.standard_normal([int(d) for d in p.shape]).astype(str(p.dtype)) for p in func.params
    ]
    outputs = []
    for knobs in (Knobs(), Knobs(panel_block=4)):
        sch = s_tir.Schedule(tvm.IRModule({"main": func}))
        assert schedule_contraction_with(sch, cpu, knobs)
        text = sch.mod["main"].script()
        lib = tvm.compile(
            tvm.IRModule({"main": sch.mod["main"].with_attr("global_symbol", "main")}),
            target=RUN_TARGET,
        )
        tensors = [tvm.runtime.tensor(a, tvm.cpu()) for a in args]
        lib["main"](*tensors)
        outputs.append((tensors[-1].numpy(), text))
    (default, default_text), (blocked, blocked_text) = outputs
    assert blocked_text != default_text
    np.testing.assert_allclose(blocked, default, rtol=1e-5, atol=1e-5)
