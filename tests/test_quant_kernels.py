"""optc.quant.kernels: 7-bit int8 weight codes exactly where optc's int8 kernel is AVX2
``vpmaddubsw`` (x86 without AVX-512 VNNI), and what 7 bits cost in weight error."""

from __future__ import annotations

import numpy as np
import pytest

import optc
from optc.quant.kernels import code_bits_for_flags, int8_code_bits
from optc.quant.latency import INT8_PMADDUBSW, INT8_VNNI, host_rates
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
