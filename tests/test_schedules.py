"""optc's CPU schedules: numerics against onnxruntime, and that the code is really
vectorized and parallel."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tvm
from onnx import TensorProto, helper, numpy_helper
from tvm import relax
from tvm.relax.frontend.onnx import from_onnx
from tvm.s_tir.analysis import estimate_tir_flops

from optc.codegen.host_cpu import host_target, missing_features
from optc.codegen.schedules import apply_cpu_schedules, cpu_pipeline
from optc.codegen.schedules.contraction import PARALLEL_MIN_MACS, choose_tile
from optc.codegen.schedules.groups import padded_group_size
from optc.codegen.schedules.hw import cpu_info
from optc.codegen.schedules.tune import check_serialization, legalized, tune
from optc.errors import UserInputError

LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
THREADS = 2
_ZNVER4 = {"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "znver4", "num-cores": THREADS}
# Code generation checks (tiles, zmm registers) are for this AVX-512 target ...
TARGET = tvm.target.Target(_ZNVER4)
# ... and code that runs here is compiled for it only where this CPU can execute it (an
# AVX2-only host would die with SIGILL): else for this host.
RUN_TARGET = TARGET if not missing_features(_ZNVER4) else tvm.target.Target(host_target(THREADS))


def randomized_light_model(name: str, seed: int = 0) -> onnx.ModelProto:
    """A light model zoo model with seeded random weights and logits as output.

    The light models' weights are ``ConstantOfShape(0.02)``: every output would be the
    same uniform softmax whatever the kernels compute. He-initialized weights and the
    final Softmax removed make the logits sensitive to every layer.
    """
    model = onnx.load(str(LIGHT / f"light_{name}.onnx"))
    rng = np.random.default_rng(seed)
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    nodes, new_inits = [], []
    for node in model.graph.node:
        if node.op_type == "ConstantOfShape" and node.input[0] in inits:
            shape = tuple(int(s) for s in inits[node.input[0]])
            if len(shape) >= 2:
                value = rng.standard_normal(shape) * np.sqrt(2.0 / np.prod(shape[1:]))
            else:  # biases and BatchNormalization statistics (variances must be positive)
                value = rng.uniform(0.5, 1.5, shape)
            new_inits.append(numpy_helper.from_array(value.astype(np.float32), node.output[0]))
        else:
            nodes.append(node)
    if nodes[-1].op_type == "Softmax":
        last = nodes.pop()
        for out in model.graph.output:
            if out.name == last.output[0]:
                out.name = last.input[0]
    used = {i for n in nodes for i in n.input}
    keep = [i for i in model.graph.initializer if i.name in used] + new_inits
    inputs = [i for i in model.graph.input if i.name in used or i.name not in inits]
    graph = helper.make_graph(nodes, model.graph.name, inputs, list(model.graph.output), keep)
    out = helper.make_model(graph, opset_imports=model.opset_import)
    out.ir_version = max(model.ir_version, 4)
    return out


def random_inputs(model: onnx.ModelProto, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    inits = {i.name for i in model.graph.initializer}
    feeds = {}
    for value in model.graph.input:
        if value.name not in inits:
            shape = [d.dim_value for d in value.type.tensor_type.shape.dim]
            feeds[value.name] = rng.standard_normal(shape).astype(np.float32)
    return feeds


def onnxruntime_outputs(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS
    options.log_severity_level = 3
    session = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    return session.run(None, feeds)


def compile_and_run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    mod = from_onnx(model, keep_params_in_input=False)
    executable = tvm.compile(mod, RUN_TARGET, relax_pipeline=cpu_pipeline(RUN_TARGET))
    vm = relax.VirtualMachine(executable, tvm.cpu())
    out = vm["main"](*[tvm.runtime.tensor(v) for v in feeds.values()])
    outs = [out] if hasattr(out, "numpy") else list(out)
    return [o.numpy() for o in outs]


def assert_close(actual: np.ndarray, expected: np.ndarray, rel: float = 1e-5) -> None:
    """Equal up to float32 reassociation: errors scaled by the output's magnitude."""
    scale = float(np.abs(expected).max())
    np.testing.assert_allclose(actual, expected, rtol=rel, atol=rel * scale)


def assert_matches_onnxruntime(model: onnx.ModelProto) -> None:
    """Built with optc's CPU schedules and run on random inputs, the model's single output
    equals onnxruntime's up to float32 reassociation."""
    feeds = random_inputs(model)
    (expected,) = onnxruntime_outputs(model, feeds)
    (actual,) = compile_and_run(model, feeds)
    assert_close(actual, expected)


@pytest.fixture(scope="module")
def squeezenet() -> onnx.ModelProto:
    return randomized_light_model("squeezenet")


@pytest.fixture(scope="module")
def squeezenet_scheduled(squeezenet: onnx.ModelProto) -> tvm.IRModule:
    mod = legalized(from_onnx(squeezenet, keep_params_in_input=False), TARGET)
    with TARGET:
        return apply_cpu_schedules(mod, TARGET)


def test_squeezenet_matches_onnxruntime(squeezenet: onnx.ModelProto) -> None:
    feeds = random_inputs(squeezenet)
    (expected,) = onnxruntime_outputs(squeezenet, feeds)
    (actual,) = compile_and_run(squeezenet, feeds)
    assert actual.shape == expected.shape
    assert_close(actual, expected)


def _functions(mod: tvm.IRModule, prefix: str) -> dict[str, tvm.tirx.PrimFunc]:
    return {
        gv.name_hint: f
        for gv, f in mod.functions_items()
        if isinstance(f, tvm.tirx.PrimFunc) and gv.name_hint.startswith(prefix)
    }


def test_convolutions_are_scheduled_parallel_and_vectorized(
    squeezenet_scheduled: tvm.IRModule,
) -> None:
    convs = _functions(squeezenet_scheduled, "fused_conv2d")
    assert len(convs) >= 10
    for name, func in convs.items():
        text = func.script()
        assert func.attrs["tirx.is_scheduled"], name
        assert "T.vectorized(" in text, name
        assert 'scope="local"' in text, name  # the accumulator tile
    # Exactly the convolutions worth a thread launch run in parallel.
    for name, func in convs.items():
        flops = estimate_tir_flops(tvm.IRModule({"main": func}))
        big = flops >= 2 * PARALLEL_MIN_MACS * 1.01  # epilogue flops are few
        assert ("T.parallel(" in func.script()) == big, (name, flops)
    assert any("T.parallel(" in func.script() for func in convs.values())


def test_convolution_machine_code_uses_avx512_fma_and_threads(
    squeezenet_scheduled: tvm.IRModule,
) -> None:
    convs = _functions(squeezenet_scheduled, "fused_conv2d")
    name, func = next((n, f) for n, f in sorted(convs.items()) if "T.parallel(" in f.script())
    lib = tvm.compile(tvm.IRModule({name: func.with_attr("global_symbol", name)}), TARGET)
    asm = lib.mod.inspect_source("asm")
    llvm_ir = lib.mod.inspect_source("ll")
    assert "vfmadd231ps" in asm and "zmm" in asm
    assert "TVMBackendParallelLaunch" in llvm_ir


def test_pooling_and_reductions_are_scheduled(squeezenet_scheduled: tvm.IRModule) -> None:
    pools = _functions(squeezenet_scheduled, "max_pool2d")
    assert pools
    for func in pools.values():
        assert "T.vectorized(" in func.script()


def _conv_weight(rng: np.random.Generator, name: str, shape: tuple[int, ...]) -> onnx.TensorProto:
    value = rng.standard_normal(shape) * np.sqrt(2.0 / np.prod(shape[1:]))
    return numpy_helper.from_array(value.astype(np.float32), name)


def _cnn_block_model() -> onnx.ModelProto:
    """Every graph shape the CNN path rewrites: explicit Pad, Clip (ReLU6), grouped and
    depthwise conv, Sum, Dropout, Concat, pooling, Gemm with transposed weights."""
    rng = np.random.default_rng(0)
    inits = [
        _conv_weight(rng, "w1", (32, 8, 3, 3)),
        _conv_weight(rng, "w_dw", (32, 1, 3, 3)),
        _conv_weight(rng, "w_g", (32, 16, 1, 1)),  # groups=2
        _conv_weight(rng, "w_g34", (68, 34, 1, 1)),  # groups=2 of 34 channels
        _conv_weight(rng, "fc", (10, 68)),
        numpy_helper.from_array(rng.standard_normal(32).astype(np.float32), "b1"),
        numpy_helper.from_array(np.array([0, 0, 0, 0, 0, 0, 1, 1], np.int64), "pads"),
        numpy_helper.from_array(np.array(0.0, np.float32), "lo"),
        numpy_helper.from_array(np.array(6.0, np.float32), "hi"),
    ]
    n = helper.make_node
    nodes = [
        n("Pad", ["x", "pads"], ["xp"]),
        n("Conv", ["xp", "w1", "b1"], ["c1"], strides=[2, 2]),
        n("Clip", ["c1", "lo", "hi"], ["r1"]),
        n("Conv", ["r1", "w_dw"], ["dw"], group=32, pads=[1, 1, 1, 1]),
        n("Conv", ["dw", "w_g"], ["g"], group=2),
        n("Sum", ["g", "r1"], ["s"]),
        n("Dropout", ["s"], ["d"]),
        n("MaxPool", ["d"], ["mp"], kernel_shape=[2, 2], strides=[2, 2]),
        n("Concat", ["mp", "mp", "mp"], ["cat"], axis=1),
        n("Slice", ["cat", "starts", "ends", "axes"], ["cat68"]),
        n("Conv", ["cat68", "w_g34"], ["g34"], group=2),
        n("Relu", ["g34"], ["r2"]),
        n("GlobalAveragePool", ["r2"], ["gap"]),
        n("Flatten", ["gap"], ["flat"]),
        n("Gemm", ["flat", "fc"], ["logits"], transB=1),
        n("Softmax", ["logits"], ["y"]),
    ]
    inits += [
        numpy_helper.from_array(np.array([0], np.int64), "starts"),
        numpy_helper.from_array(np.array([68], np.int64), "ends"),
        numpy_helper.from_array(np.array([1], np.int64), "axes"),
    ]
    graph = helper.make_graph(
        nodes,
        "cnn_block",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 32, 32])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10]),
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10]),
        ],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_cnn_rewrites_match_onnxruntime() -> None:
    model = _cnn_block_model()
    feeds = random_inputs(model)
    expected = onnxruntime_outputs(model, feeds)
    actual = compile_and_run(model, feeds)
    assert len(actual) == len(expected) == 2
    for a, e in zip(actual, expected, strict=True):
        assert_close(a, e)


def _transformer_block_model(seq: int = 32, hidden: int = 64, heads: int = 4) -> onnx.ModelProto:
    """Attention (Q K^T with a runtime transpose, softmax) + LayerNorm + GELU (Erf) MLP."""
    rng = np.random.default_rng(0)
    head = hidden // heads

    def weight(name: str, shape: tuple[int, ...]) -> onnx.TensorProto:
        value = rng.standard_normal(shape) / np.sqrt(shape[0])
        return numpy_helper.from_array(value.astype(np.float32), name)

    def const(name: str, value: np.ndarray) -> onnx.TensorProto:
        return numpy_helper.from_array(value, name)

    inits = [
        weight("wq", (hidden, hidden)),
        weight("wk", (hidden, hidden)),
        weight("wv", (hidden, hidden)),
        weight("w1", (hidden, 4 * hidden)),
        weight("w2", (4 * hidden, hidden)),
        const("heads_shape", np.array([1, seq, heads, head], np.int64)),
        const("flat_shape", np.array([1, seq, hidden], np.int64)),
        const("scale", np.array(1.0 / np.sqrt(head), np.float32)),
        const("gamma", rng.uniform(0.5, 1.5, hidden).astype(np.float32)),
        const("beta", rng.standard_normal(hidden).astype(np.float32)),
        const("sqrt2", np.array(np.sqrt(2.0), np.float32)),
        const("one", np.array(1.0, np.float32)),
        const("half", np.array(0.5, np.float32)),
    ]
    n = helper.make_node
    nodes = []
    for name in ("q", "k", "v"):
        nodes += [
            n("MatMul", ["x", f"w{name}"], [f"{name}0"]),
            n("Reshape", [f"{name}0", "heads_shape"], [f"{name}1"]),
            n("Transpose", [f"{name}1"], [f"{name}h"], perm=[0, 2, 1, 3]),
        ]
    nodes += [
        n("Transpose", ["kh"], ["kt"], perm=[0, 1, 3, 2]),
        n("MatMul", ["qh", "kt"], ["scores0"]),
        n("Mul", ["scores0", "scale"], ["scores"]),
        n("Softmax", ["scores"], ["probs"], axis=-1),
        n("MatMul", ["probs", "vh"], ["ctx0"]),
        n("Transpose", ["ctx0"], ["ctx1"], perm=[0, 2, 1, 3]),
        n("Reshape", ["ctx1", "flat_shape"], ["ctx"]),
        n("Add", ["ctx", "x"], ["res"]),
        n("LayerNormalization", ["res", "gamma", "beta"], ["ln"], axis=-1, epsilon=1e-5),
        n("MatMul", ["ln", "w1"], ["h0"]),
        n("Div", ["h0", "sqrt2"], ["h1"]),
        n("Erf", ["h1"], ["h2"]),
        n("Add", ["h2", "one"], ["h3"]),
        n("Mul", ["h0", "h3"], ["h4"]),
        n("Mul", ["h4", "half"], ["gelu"]),
        n("MatMul", ["gelu", "w2"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "transformer_block",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, seq, hidden])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, seq, hidden])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_transformer_block_matches_onnxruntime() -> None:
    model = _transformer_block_model()
    assert_matches_onnxruntime(model)


def test_transformer_matmuls_are_register_tiled() -> None:
    model = _transformer_block_model()
    mod = legalized(from_onnx(model, keep_params_in_input=False), TARGET)
    with TARGET:
        scheduled = apply_cpu_schedules(mod, TARGET)
    matmuls = _functions(scheduled, "fused_matmul") | _functions(scheduled, "matmul")
    assert matmuls
    for name, func in matmuls.items():
        text = func.script()
        assert 'scope="local"' in text and "T.vectorized(" in text, name


def test_choose_tile_prefers_exact_register_tiles() -> None:
    cpu = cpu_info(TARGET)
    assert cpu.lanes(32) == 16
    tile = choose_tile(rows=56, cols=64, cpu=cpu, dtype_bits=32)
    assert tile is not None
    assert 56 % tile.rows == 0 and tile.lanes == 16 and 64 % (tile.vectors * 16) == 0
    assert tile.rows * tile.vectors <= cpu.registers
    # 1000 output channels are not a multiple of 16: 8-lane vectors
    assert choose_tile(rows=13, cols=1000, cpu=cpu, dtype_bits=32).lanes == 8
    # a grouped conv's vector tile must stay inside one group of 34 channels
    grouped = choose_tile(rows=28, cols=136, cpu=cpu, dtype_bits=32, group=34)
    assert 34 % (grouped.vectors * grouped.lanes) == 0
    assert choose_tile(rows=7, cols=3, cpu=cpu, dtype_bits=32) is None


def test_choose_tile_on_avx2_keeps_ten_chains_and_fits_the_registers() -> None:
    """On AVX2 (16 registers) a 4x2 tile's 8 accumulators stall on FMA latency: 28- and
    56-wide convs take 6x2, a 14-wide one 5x2 (5+5+4, no 2-row tail), a 7-wide one 4x2
    (4+3 beats 5+2). No tile needs more registers than exist (accumulators, the weight
    vectors the rows share, a broadcast)."""
    avx2 = cpu_info(
        tvm.target.Target({"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "znver3"})
    )
    assert (avx2.lanes(32), avx2.registers) == (8, 16)
    picks = {
        rows: choose_tile(rows=rows, cols=256, cpu=avx2, dtype_bits=32, group=16)
        for rows in (7, 14, 28, 56, 112)
    }
    assert {rows: (t.rows, t.vectors) for rows, t in picks.items() if t} == {
        7: (4, 2),
        14: (5, 2),
        28: (6, 2),
        56: (6, 2),
        112: (6, 2),
    }
    for rows in range(1, 70):
        for cols in (8, 16, 24, 32, 48, 64, 96, 1000):
            for cpu in (avx2, cpu_info(TARGET)):
                tile = choose_tile(rows=rows, cols=cols, cpu=cpu, dtype_bits=32)
                assert tile is not None
                if tile.rows > 1:
                    assert tile.rows * tile.vectors + tile.vectors + 1 <= cpu.registers
    # AVX-512 (32 registers, 16 lanes) keeps its exact tiles: 8x2 for 56 rows, 7x2 for 7
    wide = cpu_info(TARGET)
    assert choose_tile(rows=56, cols=256, cpu=wide, dtype_bits=32, group=32) == choose_tile(
        rows=56, cols=64, cpu=wide, dtype_bits=32, group=32
    )
    tile = choose_tile(rows=56, cols=256, cpu=wide, dtype_bits=32, group=32)
    assert tile is not None and (tile.rows, tile.vectors) == (8, 2)
    tile = choose_tile(rows=7, cols=512, cpu=wide, dtype_bits=32, group=32)
    assert tile is not None and (tile.rows, tile.vectors) == (7, 2)


def test_conv_groups_are_padded_to_whole_vectors() -> None:
    assert padded_group_size(34, 16) == 48  # ShuffleNet: 2-lane vectors -> 16-lane
    assert padded_group_size(68, 16) == 80
    assert padded_group_size(128, 16) is None  # already whole vectors
    assert padded_group_size(3, 16) is None  # mostly padding: not worth it
    mod = legalized(from_onnx(_cnn_block_model(), keep_params_in_input=False), TARGET)
    shapes = [
        [int(d) for d in f.params[-1].shape]
        for gv, f in mod.functions_items()
        if isinstance(f, tvm.tirx.PrimFunc) and "conv2d" in gv.name_hint
    ]
    assert [1, 8, 8, 96] in shapes  # 2 groups of 34 -> 48 output channels


def test_avx2_target_gets_eight_lanes() -> None:
    avx2 = tvm.target.Target({"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "haswell"})
    info = cpu_info(avx2)
    assert (info.vector_bits, info.registers) == (256, 16)


def test_scheduled_functions_are_left_alone(squeezenet_scheduled: tvm.IRModule) -> None:
    again = apply_cpu_schedules(squeezenet_scheduled, TARGET)
    for gvar, func in squeezenet_scheduled.functions_items():
        if isinstance(func, tvm.tirx.PrimFunc) and "tirx.is_scheduled" in func.attrs:
            assert again[gvar].same_as(func), gvar.name_hint


def test_tune_rejects_bad_arguments(tmp_path: Path) -> None:
    mod = from_onnx(_cnn_block_model(), keep_params_in_input=False)
    with pytest.raises(UserInputError, match="trials"):
        tune(mod, TARGET, trials=0, work_dir=tmp_path)
    cuda = tvm.target.Target({"kind": "cuda", "arch": "sm_90"})
    with pytest.raises(UserInputError, match="llvm"):
        tune(mod, cuda, trials=4, work_dir=tmp_path)


def _serialization_works() -> bool:
    try:
        check_serialization()
    except UserInputError:
        return False
    return True


def test_broken_tir_serialization_is_reported_not_crashing() -> None:
    if _serialization_works():
        pytest.skip("this TVM serializes TIR: MetaSchedule runs (see the heavy tuning test)")
    with pytest.raises(UserInputError, match="apache-tvm-ffi"):
        check_serialization()


@pytest.mark.heavy
def test_tune_tiny_model_and_reuse_database(tmp_path: Path) -> None:
    if not _serialization_works():
        pytest.skip("MetaSchedule needs apache-tvm-ffi 0.1.14.post0 with apache-tvm 0.27")
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((16, 8, 3, 3)).astype(np.float32), "w")
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["c"], ["y"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 16, 16])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    mod = from_onnx(model, keep_params_in_input=False)
    database = tune(mod, RUN_TARGET, trials=6, work_dir=tmp_path)
    assert (tmp_path / "database_tuning_record.json").stat().st_size > 0
    records = (tmp_path / "database_tuning_record.json").read_text()
    tune(mod, RUN_TARGET, trials=6, work_dir=tmp_path)  # every workload cached: nothing runs
    assert (tmp_path / "database_tuning_record.json").read_text() == records
    feeds = random_inputs(model)
    (expected,) = onnxruntime_outputs(model, feeds)
    with database:
        (actual,) = compile_and_run(model, feeds)
    assert_close(actual, expected)
