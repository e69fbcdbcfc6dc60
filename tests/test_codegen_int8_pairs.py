"""The 6-bit int8 kernel (``vnni.PMADDUBSW_PAIRS``) computes what integer arithmetic says.

On x86 with AVX2 and without AVX-512 VNNI, weights whose codes all lie in [-32, 32] run
on two ``vpmaddubsw`` whose int16 pair sums are added with ``vpaddw`` before one
``vpmaddwd``: exact because |255 * 32 * 4| = 32640 fits int16. Checked here against a
numpy int64 reference at the extremes (every activation 255, every weight -32 or 32,
the largest sums the kernel can meet), on a Zen 3 target (this machine runs it when it
has AVX2); a code outside the range, or K (a conv's channels) not a multiple of 8, sends
the layer to the 7-bit kernel (``vnni.PMADDUBSW``), which stays exact.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")
from test_codegen_quantized_exact import (  # noqa: E402
    ZEN3,
    build,
    conv_reference,
    int_conv,
    needs_avx2,
    planted_operands,
    single_op,
)
from tvm import relax  # noqa: E402

from optc.codegen.schedules.vnni import (  # noqa: E402
    AVX2,
    PMADDUBSW,
    PMADDUBSW_PAIRS,
    DotKernel,
    _tile_pairs,
)
from optc.codegen.schedules.vnni_pack import dot_kernels, pack_weight  # noqa: E402


def six_bit_operands(
    rng: np.random.Generator, x_shape: tuple[int, ...], w_shape: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """uint8 activations and codes in [-32, 32]: a quarter of the activations 255, an
    eighth of the weights -32 and an eighth 32 (with 255s: 4 x 255 x 32 = 32640 per
    int16 lane), the rest random."""
    return planted_operands(rng, x_shape, w_shape, -32, 32)


def kernel_in(tir: str) -> DotKernel | None:
    """Which AVX2 kernel the scheduled TIR calls: the pairs kernel has two
    ``vpmaddubsw`` per ``vpmaddwd``."""
    ubsw, wd = tir.count("pmadd.ub.sw"), tir.count("pmadd.wd")
    if ubsw:
        return PMADDUBSW_PAIRS if ubsw == 2 * wd else PMADDUBSW
    return AVX2 if wd else None


def test_pairs_kernel_is_preferred_on_avx2_without_vnni() -> None:
    kernels = dot_kernels(ZEN3)
    assert kernels == (PMADDUBSW_PAIRS, PMADDUBSW, AVX2)
    assert PMADDUBSW_PAIRS.exact_for(np.array([-32, 32], np.int8))
    assert not PMADDUBSW_PAIRS.exact_for(np.array([-33, 0], np.int8))
    assert not PMADDUBSW_PAIRS.exact_for(np.array([0, 33], np.int8))


def test_quantizer_prices_the_kernel_the_packer_chooses() -> None:
    """``optc.quant.latency`` keeps its own copy of the shortest K (it must not import TVM)."""
    from optc.codegen.schedules.vnni import PAIRS_MIN_K
    from optc.quant import latency

    assert latency.PAIRS_MIN_K == PAIRS_MIN_K


def test_packed_bytes_are_the_seven_bit_packing() -> None:
    """``Wp[N/8, K/8, 2, 8, 4]`` is ``PMADDUBSW``'s ``Wp[N/8, K/4, 8, 4]`` viewed two
    K-groups at a time: the same bytes."""
    w = np.random.default_rng(0).integers(-32, 33, (48, 24)).astype(np.int8)
    pairs, seven = pack_weight(w, PMADDUBSW_PAIRS), pack_weight(w, PMADDUBSW)
    assert pairs.shape == (3, 6, 2, 8, 4) and seven.shape == (3, 12, 8, 4)
    assert pairs.tobytes() == seven.tobytes()
    k, n = 21, 13
    assert pairs[n // 8, k // 8, k % 8 // 4, n % 8, k % 4] == w[k, n]


@pytest.mark.parametrize(
    ("rows", "vectors", "depth"),
    [(16, 48, 384), (16, 48, 1536), (3136, 3, 144), (49, 24, 1152), (1, 125, 1280), (7, 1, 8)],
)
def test_pairs_tile_divides_and_fits(rows: int, vectors: int, depth: int) -> None:
    tile_rows, tile_vectors = _tile_pairs(rows, vectors, PMADDUBSW_PAIRS.max_acc, depth)
    assert rows % tile_rows == 0 and vectors % tile_vectors == 0
    assert tile_rows * tile_vectors <= PMADDUBSW_PAIRS.max_acc


@needs_avx2
@pytest.mark.parametrize(
    ("shape", "kernel"),
    [
        ((16, 384, 64), PMADDUBSW_PAIRS),  # MiniLM-like
        ((16, 1536, 384), PMADDUBSW_PAIRS),  # MiniLM's FFN down-projection
        ((37, 40, 40), PMADDUBSW_PAIRS),  # odd rows, K = 5 pairs of groups
        ((37, 24, 40), PMADDUBSW),  # K < PAIRS_MIN_K: too short to gain, the 7-bit kernel
        ((1, 1280, 1000), PMADDUBSW_PAIRS),  # a classifier's matrix-vector product
        ((5, 36, 24), PMADDUBSW),  # K = 4 mod 8: one group left over, the 7-bit kernel
        ((3, 27, 16), None),  # odd K: the generic int32 loop
    ],
    ids=["minilm-like", "minilm-ffn", "odd-rows", "short-k", "classifier", "k-tail-4", "k-odd"],
)
def test_pairs_matmul_equals_integer_reference(
    shape: tuple[int, int, int], kernel: DotKernel | None
) -> None:
    rows, depth, cols = shape
    x, w = six_bit_operands(np.random.default_rng(depth), (1, rows, depth), (depth, cols))
    mod = single_op(x, lambda d: relax.op.matmul(d, relax.const(w), out_dtype="int32"))
    vm, tir, asm = build(mod, ZEN3)
    assert kernel_in(tir) is kernel
    assert ("vpaddw" in asm) == (kernel is PMADDUBSW_PAIRS)
    got = vm["main"](tvm.runtime.tensor(x)).numpy()
    np.testing.assert_array_equal(got, x.astype(np.int64) @ w.astype(np.int64))


@needs_avx2
@pytest.mark.parametrize("code", [-32, 32])
def test_largest_sums_are_exact(code: int) -> None:
    """Every activation 255, every weight ``code``: each int16 lane of the kernel holds
    4 x 255 x 32 = 32640 in magnitude, 127 short of int16's limits."""
    x = np.full((1, 8, 64), 255, np.uint8)
    w = np.full((64, 16), code, np.int8)
    mod = single_op(x, lambda d: relax.op.matmul(d, relax.const(w), out_dtype="int32"))
    vm, tir, _ = build(mod, ZEN3)
    assert kernel_in(tir) is PMADDUBSW_PAIRS
    got = vm["main"](tvm.runtime.tensor(x)).numpy()
    np.testing.assert_array_equal(got, np.full((1, 8, 16), 64 * 255 * code, np.int64))


@needs_avx2
@pytest.mark.parametrize("code", [33, -33, 63, -64])
def test_a_seven_bit_code_falls_back_to_pmaddubsw(code: int) -> None:
    """One code outside [-32, 32] could wrap the int16 sum of two pair sums next to
    255s: the layer goes to the 7-bit kernel, exact."""
    x, w = six_bit_operands(np.random.default_rng(3), (1, 16, 64), (64, 32))
    w[7, 3] = code
    x[0, :, :] = 255
    mod = single_op(x, lambda d: relax.op.matmul(d, relax.const(w), out_dtype="int32"))
    vm, tir, _ = build(mod, ZEN3)
    assert kernel_in(tir) is PMADDUBSW
    got = vm["main"](tvm.runtime.tensor(x)).numpy()
    np.testing.assert_array_equal(got, x.astype(np.int64) @ w.astype(np.int64))


@needs_avx2
@pytest.mark.parametrize(
    ("channels", "out_channels", "size", "kernel", "stride", "expected"),
    [
        (144, 24, 14, 1, 1, PMADDUBSW_PAIRS),  # EfficientNet-Lite0-like 1x1
        (32, 64, 14, 3, 1, PMADDUBSW_PAIRS),  # Fashion-MNIST CNN's second conv
        (16, 24, 15, 3, 2, PMADDUBSW_PAIRS),  # strided, odd size
        (32, 16, 12, 5, 1, PMADDUBSW_PAIRS),  # 5x5
        (12, 16, 10, 3, 1, PMADDUBSW),  # C % 8 == 4: 8 k would span two pixels
        (20, 8, 9, 1, 1, PMADDUBSW),  # 1x1, K % 8 == 4
    ],
)
def test_pairs_conv_equals_integer_reference(
    channels: int, out_channels: int, size: int, kernel: int, stride: int,
    expected: DotKernel,
) -> None:
    x, w = six_bit_operands(
        np.random.default_rng(channels + kernel),
        (1, channels, size, size),
        (out_channels, channels, kernel, kernel),
    )
    vm, tir, _ = build(int_conv(x, w, stride), ZEN3)
    assert kernel_in(tir) is expected
    got = vm["main"](tvm.runtime.tensor(x)).numpy()
    np.testing.assert_array_equal(got, conv_reference(x, w, stride, kernel // 2, 1))


@needs_avx2
def test_parallel_tiles_run_in_serial_chunks() -> None:
    """The Fashion-MNIST CNN's second conv on 2 cores: 14 output rows x 14 one-pixel
    tiles are 14 parallel iterations of 14 serial tiles, not 196 (TVM allocates the
    tile's accumulator buffer once per parallel iteration, ``serial_tile_loops``), and
    exact."""
    x, w = six_bit_operands(np.random.default_rng(9), (1, 32, 14, 14), (64, 32, 3, 3))
    mod = single_op(
        x,
        lambda d: relax.op.nn.conv2d(d, relax.const(w), strides=1, padding=1, out_dtype="int32"),
    )
    vm, tir, _ = build(mod, ZEN3)
    assert kernel_in(tir) is PMADDUBSW_PAIRS
    assert re.findall(r"T\.parallel\(T\.int64\((\d+)\)\)", tir) == ["14"]
    got = vm["main"](tvm.runtime.tensor(x)).numpy()
    np.testing.assert_array_equal(got, conv_reference(x, w, 1, 1, 1))
