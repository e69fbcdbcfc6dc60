"""optc.quant.kernels: 7-bit int8 weight codes exactly where optc's int8 kernel is AVX2
``vpmaddubsw`` (x86 without AVX-512 VNNI), and what 7 bits cost in weight error; there
6-bit codes (``w6a8``) run faster, a ladder step of their own."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import optc
from optc.quant import Options, quantize_mixed
from optc.quant.kernels import (
    code_bits_for_flags,
    float_depthwise,
    int8_code_bits,
    six_bit_kernel,
)
from optc.quant.latency import INT8_PAIRS, INT8_PMADDUBSW, INT8_VNNI, host_rates
from optc.quant.layers import quantizable_layers
from optc.quant.numerics import LayerPrecision, code_label, quantize_weight, weight_error
from optc.target import get_target

W8A8 = LayerPrecision(8, 8)
DIGITS = optc.__path__[0] + "/../examples/models/digits_cnn.onnx"


@pytest.mark.parametrize(("flags", "bits"), [
    ({"avx2", "fma"}, 7),                      # Zen 3, Haswell to Ice Lake clients
    ({"avx2", "avx_vnni"}, 7),                 # 256-bit AVX-VNNI: not used by optc
    ({"avx2", "avx512bw", "avx512_vnni"}, 8),  # vpdpbusd takes every int8 code
    ({"asimd", "asimddp"}, 8),                 # Arm: no vpmaddubsw
    (set(), 8),
])
def test_code_bits_from_cpu_flags(flags: set[str], bits: int) -> None:
    assert code_bits_for_flags(flags) == bits


def test_code_bits_from_the_compile_target() -> None:
    """Asked of the code generator's own kernel choice for an x86 target."""
    pytest.importorskip("tvm")
    from optc.codegen.host_cpu import host_triple

    triple = host_triple()
    if not triple.startswith("x86_64"):
        pytest.skip("x86 LLVM targets")
    assert int8_code_bits({"kind": "llvm", "mtriple": triple, "mcpu": "znver3"}) == 7
    assert int8_code_bits({"kind": "llvm", "mtriple": triple, "mcpu": "znver4"}) == 8
    assert int8_code_bits({"kind": "llvm", "mtriple": triple, "mcpu": "znver3",
                           "mattr": ["-avx2"]}) == 8  # no packed kernel at all


def test_code_bits_off_x86_and_on_gpus() -> None:
    assert int8_code_bits({"kind": "llvm", "mtriple": "aarch64-linux-gnu",
                           "mcpu": "cortex-a72"}) == 8
    assert int8_code_bits({"kind": "cuda", "arch": "sm_87"}) == 8
    assert int8_code_bits(get_target("orin", calibrate=False)) == 8


def test_seven_bit_codes_and_their_error() -> None:
    """Codes in [-63, 63] (vpmaddubsw-safe), labelled w7a8; on a real model's weights
    the error is about 4x the 8-bit one (half the step), still far below 4-bit's."""
    graph = optc.load_onnx(DIGITS)
    layer = quantizable_layers(graph)[1]
    weight = graph.params[layer.weight]
    codes, _ = quantize_weight(weight, 7, layer.channel_axis)
    assert codes.dtype == np.int8 and codes.min() >= -63 and codes.max() <= 63
    e8 = weight_error(weight, W8A8, layer.channel_axis)
    e7 = weight_error(weight, W8A8, layer.channel_axis, int8_code_bits=7)
    e4 = weight_error(weight, LayerPrecision(4, 8), layer.channel_axis, int8_code_bits=7)
    assert 2.5 * e8 < e7 < 6 * e8 and e7 < e4 / 10
    assert code_label(W8A8, 7) == "w7a8" and code_label(W8A8) == "w8a8"
    assert code_label(LayerPrecision(4, 8), 7) == "w4a8"


def test_proxy_prices_the_host_kernel() -> None:
    assert host_rates({"avx2"}).int8_factor == INT8_PMADDUBSW
    assert host_rates({"avx2", "avx512_vnni"}).int8_factor == INT8_VNNI


W6A8 = LayerPrecision(6, 8)


def test_six_bit_kernel_where_codes_are_seven_bit() -> None:
    """6-bit codes run faster (``vnni.PMADDUBSW_PAIRS``) exactly where 8-bit weights get
    7-bit codes: x86 with AVX2 and no AVX-512 VNNI."""
    pytest.importorskip("tvm")
    from optc.codegen.host_cpu import host_triple

    triple = host_triple()
    if not triple.startswith("x86_64"):
        pytest.skip("x86 LLVM targets")
    assert six_bit_kernel({"kind": "llvm", "mtriple": triple, "mcpu": "znver3"})
    assert not six_bit_kernel({"kind": "llvm", "mtriple": triple, "mcpu": "znver4"})
    assert not six_bit_kernel({"kind": "cuda", "arch": "sm_87"})


def test_six_bit_codes_and_their_error() -> None:
    """Codes in [-31, 31], labelled w6a8 (stored as int8); on a real model's weights
    about 4x the 7-bit error, still far below 4-bit's. 6-bit weights go with 8-bit
    activations only."""
    graph = optc.load_onnx(DIGITS)
    layer = quantizable_layers(graph)[1]
    weight = graph.params[layer.weight]
    codes, _ = quantize_weight(weight, 6, layer.channel_axis)
    assert codes.dtype == np.int8 and codes.min() >= -31 and codes.max() <= 31
    e7 = weight_error(weight, W8A8, layer.channel_axis, int8_code_bits=7)
    e6 = weight_error(weight, W6A8, layer.channel_axis, int8_code_bits=7)
    e4 = weight_error(weight, LayerPrecision(4, 8), layer.channel_axis, int8_code_bits=7)
    assert 2.5 * e7 < e6 < 6 * e7 and e6 < e4 / 4
    assert code_label(W6A8, 7) == "w6a8" == W6A8.label
    with pytest.raises(ValueError):
        LayerPrecision(6, 16)


@pytest.mark.parametrize(("options", "code_bits", "ladder"), [
    (Options(), 7, ["fp16", "w8a8", "w6a8", "w4a8"]),           # AVX2 without VNNI
    (Options(), 8, ["fp16", "w8a8", "w4a8"]),                   # VNNI, Arm, GPUs
    (Options(six_bit=False), 7, ["fp16", "w8a8", "w4a8"]),
    (Options(bits=(6, 16)), 8, ["fp16", "w6a8"]),               # asked for
    (Options(act_bits=16), 7, ["fp16", "w8a16", "w4a16"]),      # no w6a16
    (Options(bits=(16,)), 7, ["fp16"]),
])
def test_ladder_gets_a_six_bit_step_where_it_is_faster(options: Options, code_bits: int,
                                                       ladder: list[str]) -> None:
    graph = optc.load_onnx(DIGITS)
    assert [p.label for p in options.ladder(graph, code_bits)] == ladder


def test_proxy_prices_six_bit_codes_on_the_pairs_kernel() -> None:
    """w6a8 (and w4a8: 4-bit codes run on the same kernel) cost ``INT8_PAIRS`` on dot
    layers whose input channels are multiples of 8; the stem and a layer with 4 mod 8
    channels cost what w7a8 does; VNNI targets have no such kernel."""
    graph = optc.load_onnx(DIGITS)
    layers = quantizable_layers(graph)
    rates = host_rates({"avx2"})
    for layer in layers:
        w8 = rates.layer_seconds(layer, W8A8)
        w6 = rates.layer_seconds(layer, W6A8)
        if layer.kind == "dot":
            assert layer.in_channels % 8 == 0
            assert w6 == pytest.approx(w8 * INT8_PAIRS / INT8_PMADDUBSW) and w6 < w8
            assert rates.layer_seconds(layer, LayerPrecision(4, 8)) == w6
            odd = dataclasses.replace(layer, in_channels=12)
            assert rates.layer_seconds(odd, W6A8) == rates.layer_seconds(odd, W8A8)
        else:
            assert w6 == w8
    vnni = host_rates({"avx2", "avx512_vnni"})
    assert all(vnni.layer_seconds(layer, W6A8) == vnni.layer_seconds(layer, W8A8)
               for layer in layers)


# -- depthwise convs: float32 compute where optc packs int8 (x86 with AVX2) ------------------
def test_float_depthwise_per_target() -> None:
    """The code generator computes int8 depthwise convs on float32 vectors where it has
    packed int8 kernels (x86 with AVX2), elsewhere as integer loops."""
    pytest.importorskip("tvm")
    from optc.codegen.host_cpu import host_triple

    triple = host_triple()
    if not triple.startswith("x86_64"):
        pytest.skip("x86 LLVM targets")
    assert float_depthwise({"kind": "llvm", "mtriple": triple, "mcpu": "znver3"})
    assert float_depthwise({"kind": "llvm", "mtriple": triple, "mcpu": "znver4"})
    assert not float_depthwise({"kind": "llvm", "mtriple": triple, "mcpu": "znver3",
                                "mattr": ["-avx2"]})
    assert not float_depthwise({"kind": "llvm", "mtriple": "aarch64-linux-gnu",
                                "mcpu": "cortex-a72"})
    assert not float_depthwise({"kind": "cuda", "arch": "sm_87"})


def test_search_keeps_depthwise_convs_fp32_where_they_compute_in_float(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """EfficientNet-Lite0's stem and first two blocks (two depthwise convs), a drop that
    every layer fits: on a host computing int8 depthwise convs in float32 they stay fp32
    (no faster as int8, only less accurate), every other layer is int8; asked to, the
    search quantizes them too, and the fp32 ones cost less fidelity."""
    pytest.importorskip("tvm")
    import model_zoo

    from optc.ir.graph import Value
    from optc.passes.eliminate_dead_code import EliminateDeadCode
    from optc.pipeline import PassContext, parse_pipeline

    if not float_depthwise(None):
        pytest.skip("this host computes int8 depthwise convs as integer loops")
    full = parse_pipeline("fold-constants,fold-batchnorm,eliminate-dead-code").run(
        optc.load_onnx(model_zoo.efficientnet_onnx(tmp_path_factory, dynamo=False))).graph
    output = quantizable_layers(full)[5].key  # block 1's project conv
    graph = EliminateDeadCode().run(full.replace(outputs=(Value(
        output, full.value(output).dtype, full.value(output).shape),)), PassContext())
    photos = np.concatenate([model_zoo.sample_photo(0), model_zoo.sample_photo(1)])
    ctx = PassContext(calibration={"image": photos})
    quick = dict(max_drop=1.0, bits=(8,), metric="cosine", int8_code_bits=8,
                 hutchinson_samples=1, sensitivity_samples=2, dependencies=False)
    kinds = {layer.key: layer.kind for layer in quantizable_layers(graph)}
    assert sorted(kinds.values()).count("depthwise") == 2
    _, kept = quantize_mixed(graph, ctx, Options(**quick))
    _, quantized = quantize_mixed(graph, ctx, Options(**quick, int8_depthwise=True))
    assert kept is not None and quantized is not None
    assert kept.bits() == {k: "fp32" if kind == "depthwise" else "w8a8"
                           for k, kind in kinds.items()}
    assert set(quantized.bits().values()) == {"w8a8"}
    assert kept.drop < quantized.drop
