"""optc's depthwise conv schedule (``schedules/depthwise.py``): EfficientNet-Lite0's and
ShuffleNet's depthwise shapes against onnxruntime, and that the schedule really applies
(padding inlined, unrolled taps over a vectorized channel loop, FMAs in the machine code)."""

from __future__ import annotations

import re

import numpy as np
import onnx
import pytest
import tvm
from onnx import TensorProto, helper, numpy_helper
from test_schedules import (
    RUN_TARGET,
    TARGET,
    assert_close,
    compile_and_run,
    onnxruntime_outputs,
    random_inputs,
)
from tvm import s_tir
from tvm.relax.frontend.onnx import from_onnx
from tvm.s_tir.dlight.analysis import normalize_prim_func

from optc.codegen.schedules import apply_cpu_schedules
from optc.codegen.schedules.depthwise import Plan, as_depthwise, choose_plan
from optc.codegen.schedules.hw import cpu_info
from optc.codegen.schedules.tune import legalized

# (channels, input size, kernel, stride, pads [top, left, bottom, right]) of real models.
SHAPES = {
    "effnet_112x32_k3s1": (32, 112, 3, 1, [1, 1, 1, 1]),
    # EfficientNet-Lite0's TF "same" padding of a stride-2 conv: bottom/right only.
    "effnet_112x96_k3s2": (96, 112, 3, 2, [0, 0, 1, 1]),
    "effnet_56x144_k5s2": (144, 56, 5, 2, [1, 1, 2, 2]),
    "effnet_28x240_k5s1": (240, 28, 5, 1, [2, 2, 2, 2]),
    "effnet_14x480_k3s1": (480, 14, 3, 1, [1, 1, 1, 1]),
    "effnet_7x1152_k5s1": (1152, 7, 5, 1, [2, 2, 2, 2]),
    "shufflenet_28x136_k3s1": (136, 28, 3, 1, [1, 1, 1, 1]),
    # No bias, no activation: the conv writes its output from the register tile itself.
    "plain_14x272_k3s1": (272, 14, 3, 1, [1, 1, 1, 1]),
}


def depthwise_model() -> onnx.ModelProto:
    """One branch per shape: depthwise Conv with bias, then ReLU6 (Clip 0..6), as the
    models have them (the epilogue is fused into the conv's tile); "plain" ones alone."""
    rng = np.random.default_rng(0)
    inputs, outputs, nodes, inits = [], [], [], []
    for name, (channels, size, kernel, stride, pads) in SHAPES.items():
        weight = rng.standard_normal((channels, 1, kernel, kernel)) / kernel
        plain = name.startswith("plain")
        inits += [
            numpy_helper.from_array(weight.astype(np.float32), f"{name}_w"),
            numpy_helper.from_array(rng.standard_normal(channels).astype(np.float32), f"{name}_b"),
        ]
        nodes.append(
            helper.make_node(
                "Conv",
                [f"{name}_x", f"{name}_w"] + ([] if plain else [f"{name}_b"]),
                [f"{name}_y" if plain else f"{name}_c"],
                group=channels,
                kernel_shape=[kernel, kernel],
                strides=[stride, stride],
                pads=pads,
            )
        )
        if not plain:
            nodes.append(helper.make_node("Clip", [f"{name}_c", "lo", "hi"], [f"{name}_y"]))
        inputs.append(
            helper.make_tensor_value_info(f"{name}_x", TensorProto.FLOAT, [1, channels, size, size])
        )
        out = (size + pads[0] + pads[2] - kernel) // stride + 1
        outputs.append(
            helper.make_tensor_value_info(f"{name}_y", TensorProto.FLOAT, [1, channels, out, out])
        )
    inits += [
        numpy_helper.from_array(np.array(0.0, np.float32), "lo"),
        numpy_helper.from_array(np.array(6.0, np.float32), "hi"),
    ]
    graph = helper.make_graph(nodes, "depthwise", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture(scope="module")
def model() -> onnx.ModelProto:
    return depthwise_model()


def _depthwise_functions(mod: tvm.IRModule) -> dict[str, tvm.tirx.PrimFunc]:
    """The functions of ``mod`` whose single reduction is a depthwise conv."""
    found = {}
    for gvar, func in mod.functions_items():
        if not isinstance(func, tvm.tirx.PrimFunc):
            continue
        sch = s_tir.Schedule(func)
        infos = normalize_prim_func(sch) or []
        reductions = [info for info in infos if not info.is_injective()]
        if len(reductions) == 1 and as_depthwise(sch, reductions[0]) is not None:
            found[gvar.name_hint] = func
    return found


def test_depthwise_convs_match_onnxruntime(model: onnx.ModelProto) -> None:
    feeds = random_inputs(model)
    expected = onnxruntime_outputs(model, feeds)
    actual = compile_and_run(model, feeds)
    assert len(actual) == len(expected) == len(SHAPES)
    for a, e in zip(actual, expected, strict=True):
        assert a.shape == e.shape
        assert_close(a, e)


@pytest.mark.parametrize("target", [TARGET, RUN_TARGET], ids=["avx512", "run"])
def test_every_depthwise_conv_gets_the_depthwise_schedule(
    model: onnx.ModelProto, target: tvm.target.Target
) -> None:
    mod = legalized(from_onnx(model, keep_params_in_input=False), target)
    convs = _depthwise_functions(mod)
    assert len(convs) == len(SHAPES)
    with target:
        scheduled = apply_cpu_schedules(mod, target)
    lanes = cpu_info(target).lanes(32)
    for name in convs:
        func = scheduled[name]
        assert func.attrs["tirx.is_scheduled"], name
        text = func.script()
        # The padding is inlined into the conv: no padded copy of the input.
        assert "pad_temp" not in text, name
        sch = s_tir.Schedule(func)
        update = sch.get_sblock("group_conv2d_nhwc_update")
        loops = [sch.get(loop) for loop in sch.get_loops(update)]
        kinds = [loop.kind for loop in loops]
        # Innermost: one channel vector; above it the unrolled vectors, pixels and taps.
        assert kinds[-1] == tvm.tirx.ForKind.VECTORIZED, name
        assert int(loops[-1].extent) in (lanes, lanes // 2), name
        assert kinds[-5:-1] == [tvm.tirx.ForKind.UNROLLED] * 4, name
        assert 'scope="local"' in text, name  # the accumulator strip


def test_machine_code_is_vector_fma_without_gathers(model: onnx.ModelProto) -> None:
    mod = legalized(from_onnx(model, keep_params_in_input=False), RUN_TARGET)
    name = next(n for n in sorted(_depthwise_functions(mod)) if "conv2d" in n)
    with RUN_TARGET:
        func = apply_cpu_schedules(mod, RUN_TARGET)[name]
    lib = tvm.compile(tvm.IRModule({name: func.with_attr("global_symbol", name)}), RUN_TARGET)
    asm = lib.mod.inspect_source("asm")
    assert "vfmadd231ps" in asm
    assert "vgatherdps" not in asm and "vgatherqps" not in asm


def test_plan_fills_cache_lines_on_large_inputs(model: onnx.ModelProto) -> None:
    """AVX2: 16 channels x 4 pixels where the input is over 1 MiB, else 8 x up to 8
    pixels dividing the output width; narrower vectors for channels not a multiple of 8
    on AVX-512."""
    mod = legalized(from_onnx(model, keep_params_in_input=False), RUN_TARGET)
    avx2 = cpu_info(tvm.target.Target({"kind": "llvm", "mcpu": "znver3", "num-cores": 2}))
    avx512 = cpu_info(TARGET)
    plans: dict[tuple[int, int], tuple[Plan | None, Plan | None]] = {}
    for func in _depthwise_functions(mod).values():
        sch = s_tir.Schedule(func)
        (conv,) = [i for i in normalize_prim_func(sch) or [] if not i.is_injective()]
        dw = as_depthwise(sch, conv)
        assert dw is not None
        key = (dw.extent(dw.channel), dw.extent(dw.col))
        plans[key] = (choose_plan(dw, avx2), choose_plan(dw, avx512))
    assert plans[(96, 56)][0] == Plan(rows=4, pixels=4, vectors=2, lanes=8)
    assert plans[(240, 28)][0] == Plan(rows=4, pixels=7, vectors=1, lanes=8)
    assert plans[(1152, 7)][0] == Plan(rows=1, pixels=7, vectors=1, lanes=8)
    assert plans[(136, 28)][1] == Plan(rows=4, pixels=7, vectors=1, lanes=8)
    assert plans[(96, 56)][1] == Plan(rows=4, pixels=8, vectors=1, lanes=16)


def test_parallel_row_bands_run_in_serial_chunks(model: onnx.ModelProto) -> None:
    """On 2 cores the 7x7x1152 conv's 144 channel vectors x 7 one-row bands are 144
    parallel iterations of 7 serial bands, not 1008: TVM allocates the strip's
    accumulator buffer once per parallel iteration (``contraction.serial_tile_loops``).
    ``test_depthwise_convs_match_onnxruntime`` runs them chunked on a multi-core host."""
    avx2 = tvm.target.Target({"kind": "llvm", "mcpu": "znver3", "num-cores": 2})
    mod = legalized(from_onnx(model, keep_params_in_input=False), avx2)
    convs = _depthwise_functions(mod)
    with avx2:
        scheduled = apply_cpu_schedules(mod, avx2)
    extents = {}
    for name, func in convs.items():
        sch = s_tir.Schedule(func)
        (conv,) = [i for i in normalize_prim_func(sch) or [] if not i.is_injective()]
        dw = as_depthwise(sch, conv)
        assert dw is not None
        text = scheduled[name].script()
        found = [int(e) for e in re.findall(r"T\.parallel\(T\.int64\((\d+)\)\)", text)]
        extents[(dw.extent(dw.channel), dw.extent(dw.col))] = found
    assert extents[(1152, 7)] == [144]
    assert extents[(240, 28)] == [30]  # 30 channel vectors x 7 bands of 4 rows
    # 6 channel blocks (of 16) alone are too few for 4 iterations per core: 6 x 14 stay.
    assert extents[(96, 56)] == [84]
