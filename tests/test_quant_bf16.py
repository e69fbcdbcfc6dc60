"""The 16-bit rung in bfloat16 where the code generator runs bfloat16 contractions natively
(x86 with AVX-512 BF16, ``vdpbf16ps``), float16 elsewhere: the choice per compile target,
the emitted graph on the bundled digits CNN, its fidelity through the reference
interpreter, the pass option that forces either type, and the latency proxy that makes
the search take the rung where bfloat16 is faster than fp32."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import onnx
import pytest
import torch

import optc
from optc.interp import run, run_numpy
from optc.ir.annotations import Precision
from optc.ir.graph import Graph
from optc.passes.mixed_precision import MixedPrecision
from optc.pipeline import PassContext, Pipeline, parse_pipeline
from optc.quant import FP16, FP32, Calibration, Options, quantize_mixed
from optc.quant.emit import emit
from optc.quant.evaluate import Evaluator
from optc.quant.kernels import half_dtype, half_dtype_for_flags
from optc.quant.latency import (
    BF16_DOT,
    FP16_WIDENED,
    cpu_flags,
    host_rates,
    native_bf16,
    on_bf16_kernel,
    proxy_latency,
)
from optc.quant.layers import quantizable_layers
from optc.quant.numerics import LayerPrecision, code_label, weight_error
from optc.quant.search import MIN_GAIN

MODELS = Path(__file__).resolve().parent.parent / "examples" / "models"
FOLD = "fold-constants,fold-batchnorm,eliminate-dead-code"
ZEN4_FLAGS = frozenset({"avx2", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
                        "avx512_bf16"})
ZEN3_FLAGS = frozenset({"avx2", "fma"})
BF16_ULP = 2.0 ** -7
"""bfloat16's spacing relative to a value (8 significant bits): at most 2^-7."""


def llvm_target(mcpu: str) -> dict[str, Any]:
    pytest.importorskip("tvm")
    from optc.codegen.host_cpu import host_triple

    triple = host_triple()
    if not triple.startswith("x86_64"):
        pytest.skip("x86 LLVM targets")
    return {"kind": "llvm", "mtriple": triple, "mcpu": mcpu}


@pytest.fixture(scope="module")
def digits() -> Graph:
    return parse_pipeline(FOLD).run(optc.load_onnx(MODELS / "digits_cnn.onnx")).graph


@pytest.fixture(scope="module")
def calibration() -> dict[str, np.ndarray]:
    data = np.load(MODELS / "digits_test.npz")
    return {"input": data["input"][:128], "labels": data["labels"][:128]}


def weight_bytes(graph: Graph, _ctx: PassContext) -> float:
    """A latency that every 16-bit layer lowers (half the weight bytes), whatever the host."""
    return float(sum(array.nbytes for array in graph.params.values()))


# -- the choice per target -------------------------------------------------------------------
@pytest.mark.parametrize(("flags", "half"), [
    (ZEN4_FLAGS, "bfloat16"),                          # Zen 4, Sapphire Rapids
    (ZEN4_FLAGS - {"avx512bw"}, "float16"),             # the packed kernel needs AVX-512 BW
    (ZEN4_FLAGS - {"avx512vl"}, "float16"),             # and VL (its 256-bit form)
    (ZEN3_FLAGS, "float16"),
    ({"avx2", "avx512bw", "avx512_vnni"}, "float16"),  # Ice Lake: VNNI, no BF16
    ({"asimd", "asimdhp", "bf16"}, "float16"),          # Arm: native float16 instead
    (frozenset(), "float16"),
])
def test_half_dtype_from_cpu_flags(flags: frozenset[str], half: str) -> None:
    assert half_dtype_for_flags(flags) == half


def test_half_dtype_from_the_compile_target() -> None:
    """Asked of the code generator's own test (``hw.has_bf16_dot``)."""
    assert half_dtype(llvm_target("znver4")) == "bfloat16"
    assert half_dtype(llvm_target("znver3")) == "float16"
    assert half_dtype({**llvm_target("znver4"), "mattr": ["-avx512bf16"]}) == "float16"
    assert half_dtype({"kind": "llvm", "mtriple": "aarch64-linux-gnu",
                       "mcpu": "cortex-a72"}) == "float16"
    assert half_dtype({"kind": "cuda", "arch": "sm_87"}) == "float16"
    assert half_dtype(None) == half_dtype_for_flags(cpu_flags())  # this host


# -- emission --------------------------------------------------------------------------------
def compile_target(mcpu: str) -> Any:
    """The host target file with the TVM target of ``mcpu`` (what ``--target`` gives)."""
    from optc.target import get_target

    host = get_target("host", calibrate=False)
    return dataclasses.replace(host, tvm_target_json=json.dumps(llvm_target(mcpu)))


def all_sixteen(graph: Graph, calibration: Mapping[str, np.ndarray], target: Any,
                **options: Any) -> tuple[Graph, Any]:
    ctx = PassContext(calibration=dict(calibration), target=target,
                      analyses={"latency": weight_bytes})
    return quantize_mixed(graph, ctx, Options(bits=(16,), max_drop=1.0, hutchinson_samples=1,
                                              sensitivity_samples=8, **options))


def assert_emitted_in(graph: Graph, half: str, annotated: bool = True) -> None:
    """Every layer is in the 16-bit form of ``half`` (``optc.quant.emit``), and no other
    16-bit float type appears. float16: it reads a Cast to float16 and float16 weight and
    bias, writes float16, and is cast back to float32. bfloat16: float32 arithmetic on
    bfloat16 values — it reads the activation cast to bfloat16 and back to float32, and
    its bfloat16 weight cast to float32; bias and output stay float32. ``annotated``: the
    layers carry their ``Precision`` (an ONNX round trip drops annotations)."""
    layers = [n for n in graph.nodes if n.op in ("Conv", "Gemm")]
    assert len(layers) == 4
    for node in layers:
        if half == "float16":
            data = graph.producer(node.inputs[0])
            assert data is not None and data.op == "Cast"
            assert data.attr("to") == onnx.TensorProto.FLOAT16
            for param in node.inputs[1:]:
                assert graph.params[param].dtype == np.float16
            assert node.outputs[0].dtype == "float16"
            (back,) = graph.consumers(node.outputs[0].name)
            assert back.op == "Cast" and back.attr("to") == onnx.TensorProto.FLOAT
        else:
            assert_bf16_values(graph, node.inputs[0], annotated)
            widen = graph.producer(node.inputs[1])
            assert widen is not None and widen.op == "Cast"
            assert widen.attr("to") == onnx.TensorProto.FLOAT
            assert graph.params[widen.inputs[0]].dtype == ml_dtypes.bfloat16
            assert all(graph.params[b].dtype == np.float32 for b in node.inputs[2:])
            assert node.outputs[0].dtype == "float32"
        tags = [a for a in node.annotations if isinstance(a, Precision)]
        assert tags == ([Precision(16, "bfloat" if half == "bfloat16" else "float")]
                        if annotated else [])
    other = {"bfloat16": "float16", "float16": "bfloat16"}[half]
    assert not any(v.dtype == other for n in graph.nodes for v in n.outputs)


def assert_bf16_values(graph: Graph, name: str, annotated: bool = True) -> None:
    """``name`` is an activation rounded to bfloat16 and read back as float32, tagged
    ``Precision(16, "bfloat")`` (the roofline's compute dtype) when ``annotated``."""
    back = graph.producer(name)
    assert back is not None and back.op == "Cast" and back.attr("to") == onnx.TensorProto.FLOAT
    rounded = graph.producer(back.inputs[0])
    assert rounded is not None and rounded.op == "Cast"
    assert rounded.attr("to") == onnx.TensorProto.BFLOAT16
    tags = [a for a in graph.value(name).annotations if isinstance(a, Precision)]
    assert tags == ([Precision(16, "bfloat")] if annotated else [])


def test_bfloat16_on_a_target_with_avx512_bf16(digits: Graph,
                                                calibration: dict[str, np.ndarray]) -> None:
    after, report = all_sixteen(digits, calibration, compile_target("znver4"))
    assert report is not None and report.half_dtype == "bfloat16"
    assert set(report.bits().values()) == {"bf16"}
    assert report.trials[-1]["lowered"] == {"bf16": 4}
    assert_emitted_in(after, "bfloat16")
    assert after.param_bytes() < digits.param_bytes() * 0.51
    # the saved model keeps the bfloat16 initializers and Casts, and is valid ONNX at its
    # opset 17 (a bfloat16 Conv would need opset 22): onnxruntime runs it too
    model = optc.to_onnx(after)
    onnx.checker.check_model(model, full_check=True)
    reloaded = optc.from_onnx(model)
    assert_emitted_in(reloaded, "bfloat16", annotated=False)


def test_float16_on_a_target_without(digits: Graph,
                                      calibration: dict[str, np.ndarray]) -> None:
    after, report = all_sixteen(digits, calibration, compile_target("znver3"))
    assert report is not None and report.half_dtype == "float16"
    assert set(report.bits().values()) == {"fp16"}
    assert_emitted_in(after, "float16")


def test_weight_only_layers_take_the_target_type(digits: Graph,
                                                 calibration: dict[str, np.ndarray]) -> None:
    """w8a16: int8 codes dequantized, then cast to the 16-bit type of the activations
    (and, in the bfloat16 form, read back as float32)."""
    layers = quantizable_layers(digits)
    after = emit(digits, layers, {layer.key: LayerPrecision(8, 16) for layer in layers}, {},
                 half_dtype="bfloat16")
    for layer in layers:
        core = after.producer(layer.key)
        assert core is not None and core.op in ("Conv", "Gemm")
        assert_bf16_values(after, core.inputs[0])
        widen = after.producer(core.inputs[1])
        assert widen is not None and widen.op == "Cast"
        assert widen.attr("to") == onnx.TensorProto.FLOAT
        weight = after.producer(widen.inputs[0])
        assert weight is not None and weight.op == "Cast"
        assert weight.attr("to") == onnx.TensorProto.BFLOAT16
        dequantized = after.producer(weight.inputs[0])
        assert dequantized is not None and dequantized.op == "DequantizeLinear"
        assert after.params[dequantized.inputs[0]].dtype == np.int8
    out = run_numpy(after, {"input": calibration["input"][:1]})["logits"]
    want = run_numpy(digits, {"input": calibration["input"][:1]})["logits"]
    assert out.dtype == np.float32 and np.abs(out - want).max() < 0.05 * np.abs(want).max()


def test_depthwise_convs_stay_fp32_on_the_bfloat16_step(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """EfficientNet-Lite0's stem and first two blocks: in bfloat16 every layer but the two
    depthwise convs takes 16 bits (they have no ``vdpbf16ps`` form: widened, no faster);
    ``int8_depthwise`` lets them through, on their way to int8; float16 takes them all."""
    import model_zoo

    from optc.ir.graph import Value
    from optc.passes.eliminate_dead_code import EliminateDeadCode

    full = parse_pipeline(FOLD).run(
        optc.load_onnx(model_zoo.efficientnet_onnx(tmp_path_factory, dynamo=False))).graph
    output = quantizable_layers(full)[5].key  # block 1's project conv
    graph = EliminateDeadCode().run(full.replace(outputs=(Value(
        output, full.value(output).dtype, full.value(output).shape),)), PassContext())
    kinds = {layer.key: layer.kind for layer in quantizable_layers(graph)}
    assert sorted(kinds.values()).count("depthwise") == 2
    ctx = PassContext(calibration={"image": model_zoo.sample_photo(0)},
                      analyses={"latency": weight_bytes})
    quick = dict(max_drop=1.0, bits=(16,), metric="cosine", hutchinson_samples=1,
                 sensitivity_samples=1, dependencies=False)
    found = {}
    for name, extra in {"bf16": {"half_dtype": "bfloat16"},
                        "bf16+dw": {"half_dtype": "bfloat16", "int8_depthwise": True},
                        "fp16": {"half_dtype": "float16"}}.items():
        _, report = quantize_mixed(graph, ctx, Options(**quick, **extra))
        assert report is not None
        found[name] = report.bits()
    assert found["bf16"] == {k: "fp32" if kind == "depthwise" else "bf16"
                             for k, kind in kinds.items()}
    assert set(found["bf16+dw"].values()) == {"bf16"}
    assert set(found["fp16"].values()) == {"fp16"}


# -- the pass option -------------------------------------------------------------------------
def test_pass_option_forces_either_type(digits: Graph,
                                        calibration: dict[str, np.ndarray]) -> None:
    configured = Pipeline.parse("mixed-precision{half=bfloat16 bits=16}").passes[-1]
    assert configured == MixedPrecision(half="bfloat16", bits=(16,))
    assert str(Pipeline.parse("mixed-precision{half=float16}")) == \
        "mixed-precision{half=float16}"
    assert MixedPrecision().options_record().half_dtype is None  # auto: the target's
    assert MixedPrecision(half="float16").options_record().half_dtype == "float16"
    with pytest.raises(ValueError):
        Options(half_dtype="float8")  # type: ignore[arg-type]

    forced_bf16, _ = all_sixteen(digits, calibration, compile_target("znver3"),
                                 half_dtype="bfloat16")
    assert_emitted_in(forced_bf16, "bfloat16")
    forced_fp16, _ = all_sixteen(digits, calibration, compile_target("znver4"),
                                 half_dtype="float16")
    assert_emitted_in(forced_fp16, "float16")


# -- fidelity --------------------------------------------------------------------------------
def test_interpreter_fidelity_of_the_all_bfloat16_model(
    digits: Graph, calibration: dict[str, np.ndarray],
) -> None:
    """The interpreter runs the emitted graph in bfloat16: on the 128 digits its logits
    stay within 2 % of their largest magnitude of fp32 (measured 0.8 %), every top-1
    agrees (cosine > 0.9999), and bfloat16 costs more than float16 (8 significant bits
    against 11; measured 8x the largest error)."""
    layers = quantizable_layers(digits)
    evaluator = Evaluator(digits, Calibration({"input": calibration["input"]},
                                              calibration["labels"]))
    errors = {}
    for half in ("float16", "bfloat16"):
        graph = emit(digits, layers, {layer.key: FP16 for layer in layers}, {},
                     half_dtype=half)
        out = evaluator.outputs(graph)
        errors[half] = float((out - evaluator.reference).abs().max()
                             / evaluator.reference.abs().max())
        fidelity = evaluator.fidelity(graph)
        assert fidelity["agreement"] == 1.0 and fidelity["cosine"] > 0.9999
        assert evaluator.measure(graph).drop <= 0.0
    assert errors["bfloat16"] < 0.02
    assert errors["bfloat16"] > 3 * errors["float16"]


def test_interpreter_computes_what_the_kernel_does(digits: Graph,
                                                   calibration: dict[str, np.ndarray]) -> None:
    """What the search measures is what the ``vdpbf16ps`` kernel computes: float32
    products and sums of the bfloat16 operands (the form the pass writes says exactly
    that). Emulated here in float32 numpy for the first conv: equal up to the order of
    the float32 sums."""
    layers = quantizable_layers(digits)
    first = layers[0]
    graph = emit(digits, layers, {first.key: FP16}, {}, half_dtype="bfloat16")
    core = graph.producer(first.key)
    assert core is not None and core.op == "Conv"
    image = calibration["input"][:4]
    with torch.no_grad():
        found = [run(graph, {"input": image[i:i + 1]}, outputs=[first.key])[first.key]
                 for i in range(len(image))]
    got = torch.cat(found).float().numpy()
    widen = graph.producer(core.inputs[1])
    assert widen is not None
    weight = graph.params[widen.inputs[0]].astype(np.float32)
    bias = graph.params[core.inputs[2]]
    rounded = image.astype(ml_dtypes.bfloat16).astype(np.float32)
    want = conv2d(rounded, weight, bias, core)
    assert np.allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def conv2d(x: np.ndarray, w: np.ndarray, b: np.ndarray, node: Any) -> np.ndarray:
    """A plain float32 NCHW convolution (stride 1, symmetric padding, no groups)."""
    assert tuple(node.attr("strides", (1, 1))) == (1, 1) and int(node.attr("group", 1)) == 1
    pad = tuple(node.attr("pads", (0, 0, 0, 0)))
    x = np.pad(x, ((0, 0), (0, 0), (pad[0], pad[2]), (pad[1], pad[3])))
    kh, kw = w.shape[2:]
    h, wd = x.shape[2] - kh + 1, x.shape[3] - kw + 1
    windows = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(2, 3))
    out = np.einsum("nchwij,ocij->nohw", windows[:, :, :h, :wd], w, dtype=np.float32)
    return (out + b[None, :, None, None]).astype(np.float32)


def test_hessian_scores_see_the_bfloat16_rounding(digits: Graph) -> None:
    """The sensitivity of the 16-bit step weighs the error of the type really emitted:
    bfloat16's is about 64x float16's (3 fewer significand bits, squared)."""
    layer = quantizable_layers(digits)[1]
    weight = digits.params[layer.weight]
    fp16 = weight_error(weight, FP16, layer.channel_axis)
    bf16 = weight_error(weight, FP16, layer.channel_axis, half_dtype="bfloat16")
    assert 20 * fp16 < bf16 < 200 * fp16
    assert code_label(FP16, half_dtype="bfloat16") == "bf16"
    assert code_label(FP16) == "fp16" and code_label(FP32, half_dtype="bfloat16") == "fp32"


# -- latency ---------------------------------------------------------------------------------
def test_proxy_prices_bfloat16_faster_than_fp32_where_native(digits: Graph) -> None:
    """On an AVX-512 BF16 host a bf16 layer that ``vdpbf16ps`` runs costs ``BF16_DOT`` of
    its fp32 cost, enough for the ladder's step (``MIN_GAIN``), and int8 still less; a
    layer it cannot run (stem over one channel, grouped convs, a classifier of 10 classes:
    not a multiple of 8 outputs), float16 there, and either type without the
    instructions are widened to float32 and no faster."""
    layers = quantizable_layers(digits)
    zen4 = host_rates(ZEN4_FLAGS)
    assert zen4.half_dtype == "bfloat16" and native_bf16(ZEN4_FLAGS)
    stem, *packed, classifier = layers  # the stem reads one channel: no pairs to sum
    assert all(on_bf16_kernel(layer) for layer in packed)
    for widened in (stem, classifier):
        assert not on_bf16_kernel(widened)
        assert zen4.layer_seconds(widened, FP16) >= zen4.layer_seconds(widened, FP32)
    for layer in packed:
        fp32 = zen4.layer_seconds(layer, FP32)
        bf16 = zen4.layer_seconds(layer, FP16)
        assert bf16 == pytest.approx(BF16_DOT * fp32)
        assert bf16 < (1 - MIN_GAIN) * fp32
        assert zen4.layer_seconds(layer, LayerPrecision(8, 8)) < bf16
        assert host_rates(ZEN4_FLAGS, "float16").layer_seconds(layer, FP16) >= fp32
        assert host_rates(ZEN3_FLAGS, "bfloat16").layer_seconds(layer, FP16) >= fp32
    zen3 = host_rates(ZEN3_FLAGS)
    assert zen3.half_dtype == "float16" and zen3.fp16_factor == FP16_WIDENED
    everything = {layer.key: FP16 for layer in layers}
    assert proxy_latency(layers, zen4)(digits, everything) < \
        (1 - MIN_GAIN) * proxy_latency(layers, zen4)(digits, {})
    assert proxy_latency(layers, zen3)(digits, everything) > \
        proxy_latency(layers, zen3)(digits, {})
    for odd in (dataclasses.replace(layers[1], kind="depthwise", groups=32, in_channels=1),
                dataclasses.replace(layers[1], groups=2), dataclasses.replace(layers[1],
                                                                              in_channels=3)):
        assert not on_bf16_kernel(odd)  # grouped, depthwise, odd channels: widened
        assert zen4.layer_seconds(odd, FP16) >= zen4.layer_seconds(odd, FP32)


@pytest.mark.skipif(not native_bf16(cpu_flags()), reason="this host has no AVX-512 BF16")
def test_search_takes_the_bfloat16_rung_on_this_host(
    digits: Graph, calibration: dict[str, np.ndarray],
) -> None:
    """Priced by the host proxy: bf16 is taken (every layer, within a 1-point drop); forced
    to float16 the same search skips the rung (widened, no faster) and keeps fp32."""
    ctx = PassContext(calibration=dict(calibration))
    quick = dict(bits=(16,), hutchinson_samples=1, sensitivity_samples=8)
    _, report = quantize_mixed(digits, ctx, Options(**quick))
    assert report is not None and report.latency_model == "proxy"
    assert set(report.bits().values()) == {"bf16"}
    assert report.latency_s < (1 - MIN_GAIN) * report.latency_fp32_s
    assert report.drop <= 0.01
    after, report = quantize_mixed(digits, ctx, Options(**quick, half_dtype="float16"))
    assert report is not None and set(report.bits().values()) == {"fp32"}
    assert after is digits


def test_roofline_prices_bfloat16_layers_at_the_bfloat16_peak(digits: Graph) -> None:
    """With ``ctx.target`` set the roofline prices candidates: a bf16 layer's compute
    uses the target's ``peak_flops.bfloat16`` (the host micro-benchmark adds it on CPUs
    with AVX-512 BF16), a float16 one the float32 peak (no float16 figure)."""
    pytest.importorskip("optc.cost.roofline")
    from optc.cost.roofline import RooflineModel
    from optc.target import get_target

    figures = {"peak_flops.float32": 1e11, "peak_flops.int8": 4e11, "memory_bandwidth": 2e10,
               "launch_overhead": 2e-6, "cache_size": 3.2e7, "cache_bandwidth": 1e11}
    host = get_target("host", calibrate=False)
    pending = {key: figures[key] for key in host.pending_figures()}
    target = host.with_measurements(
        {**pending, "peak_flops.float32": 1e11, "peak_flops.bfloat16": 2e11}, "test",
        new_dtypes=True)
    layers = quantizable_layers(digits)
    model = RooflineModel()
    fp32 = {r.name: r for r in model.breakdown(digits, target).nodes if r.op == "Conv"}
    for half, dtype in (("bfloat16", "bfloat16"), ("float16", "float32")):
        graph = emit(digits, layers, {layer.key: FP16 for layer in layers}, {},
                     half_dtype=half)
        rows = [r for r in model.breakdown(graph, target).nodes if r.op == "Conv"]
        assert len(rows) == len(fp32) == 3 and {r.dtype for r in rows} == {dtype}
        ratio = sum(r.compute_s for r in rows) / sum(r.compute_s for r in fp32.values())
        assert ratio == pytest.approx(0.5 if half == "bfloat16" else 1.0, rel=1e-6)
