"""Schedule int8 contractions on packed weights: ``vpdpbusd``, ``vpmaddubsw`` or ``vpmaddwd``.

``optc.codegen.quantized`` gives a uint8 x int8 -> int32 matmul whose weights it packed
at compile time as ``Wp[N/16, K/4, 16, 4]`` (``Wp[n//16, k//4, n%16, k%4] = W[k, n]``)
when the target has VNNI. One ``vpdpbusd`` multiplies 4 consecutive uint8 activations
(broadcast) with a 16 x 4 int8 weight tile and adds the 4 products of each row to 16
int32 lanes: 64 multiply-adds per instruction, four times a float32 FMA. The loop nest::

    parallel for (batch, col_outer, ...):              # fused: >= 4 iterations per core
      for (..., row_outer):                            # serial: the rest of the tiles
        acc[rows, vectors * 16] = 0                    # int32, in registers
        for ko in K / 4:
            for r in rows (unrolled): for v in vectors (unrolled):
                acc[r, v*16:(v+1)*16] = vpdpbusd(acc, bcast(A[r, 4ko:4ko+4]), Wp[v, ko])
        O[..] = epilogue(acc)                          # rescale, bias, ... fused

Output widths that are a multiple of 8 but not of 16 (EfficientNet's 24 and 40 channels,
a 1000-class classifier) take 256-bit ``vpdpbusd`` on VNNI CPUs (``VNNI_YMM``, 8 int32
lanes, on ``PMADDUBSW``'s packing below): on the vpmaddwd kernel they had run 2x as long
(EfficientNet-Lite0 on a Zen 4: its 96 -> 24, 144 -> 24, 240 -> 40 1x1 convs 0.47-0.54x,
the classifier 0.74x the time, kernel medians, one thread; the whole mixed model 0.946x,
paired).
On x86 with AVX2 but no AVX-512 VNNI (Zen 3, Haswell to Ice Lake clients), and for
K a multiple of 2 but not of 4 on VNNI CPUs too, the same loop nest runs on
``vpmaddwd`` (``AVX2``): the int8
weight is packed as ``Wp[N/8, K/2, 8, 2]`` and sign-extended to int16 as it is loaded,
two consecutive uint8 activations are broadcast as one 16-bit word and zero-extended to
an int16 pair, and one instruction multiplies them with the 8 x 2 weight tile and adds
each pair into 8 int32 lanes: 16 exact multiply-adds per instruction where a float32 FMA
does 8 (the int32-lane fallback widened both operands per element and multiplied with
``vpmulld``: 1.5x slower than float32 on Zen 3, 1x1 conv 480->80 at 14x14; packed: 0.7x).
Weights packed as int16 were not faster there and doubled the library's weight bytes.

Faster on those CPUs, for weights whose codes all lie in [-64, 63] (what ``optc.quant``
emits for them, ``optc.quant.kernels``): ``vpmaddubsw`` (``PMADDUBSW``, oneDNN's AVX2
emulation of ``vpdpbusd``) on ``Wp[N/8, K/4, 8, 4]``. Four consecutive uint8 activations
are broadcast as one 32-bit word; ``vpmaddubsw`` multiplies them with the 8 x 4 int8
weight tile into 16 int16 sums of two products, ``vpmaddwd`` with a vector of int16 ones
adds those pairs into 8 int32 sums of four, and ``vpaddd`` accumulates: 32 multiply-adds
per three instructions. The int16 sums saturate for 8-bit codes (2 * 255 * 127 > 32767)
but not for 7-bit ones (2 * 255 * 64 = 32640), so the kernel is bit-exact; which kernel
a weight gets is decided from its codes (``vnni_pack``). Per kernel against optc's
float32 code on a Zen 3 target: 0.24-0.82x (``vpmaddwd``: 0.62-0.90x; the shapes and
figures are in ``optc.quant.latency``).

For weights whose codes all lie in [-32, 32] (``optc.quant``'s 6-bit ``w6a8``) and K a
multiple of 8, ``PMADDUBSW_PAIRS`` adds the int16 results of two ``vpmaddubsw`` (two
K-groups) with ``vpaddw`` before ONE ``vpmaddwd``: 64 multiply-adds per five vector
instructions instead of six (4 x 255 x 32 = 32640 fits int16: exact). Its weight is the
same bytes viewed as ``Wp[N/8, K/8, 2, 8, 4]`` (the extra axis is what tells the
schedule which kernel a packed weight is for). Zen 3 is bound by its four vector pipes
here rather than by the two multiply pipes, so the gain is 5/6 of the instructions, not
3/4 of the multiplies: per kernel 0.89-1.0x the 7-bit kernel's time (MiniLM's matmuls
0.89-0.96x, paired, 2 threads, under load; ``optc.quant.latency.PAIRS_VS_PMADDUBSW``).

A contraction that does not read such a packed weight is left to ``contraction.py``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable

import numpy as np
from tvm import s_tir, tirx
from tvm.s_tir.dlight.analysis import SBlockInfo
from tvm.script import tirx as T

from . import bf16_dot
from .contraction import PARALLEL_MIN_MACS, fuse_tile_loops
from .hw import CpuInfo
from .loops import unroll_and_vectorize, write_tile_from_registers

logger = logging.getLogger(__name__)

LANES, GROUP = 16, 4  # int32 lanes of a 512-bit register; uint8 products summed per lane
# Accumulator registers of a tile; the rest hold the broadcast activations and weights.
_MAX_ACC = 24
_MAX_ROWS = 8


# TVM's own ``dot_16x4_vnni`` wants its accumulator in global memory; ours is a register
# tile (``local``), so the same instruction is registered with a local accumulator.
INTRIN = "optc_dot_16x4_vnni_local"


def _widen(x: tirx.PrimExpr, dtype: str, acc: str) -> tirx.PrimExpr:
    """An operand element of type ``dtype`` as the accumulator type; uint16 operands are
    bfloat16 bits (``bf16_dot``: a padded copy made inside a conv kernel)."""
    return T.cast(T.reinterpret(x, dtype="bfloat16") if dtype == "uint16" else x, acc)


def _dot_desc(
    lanes: int, group: int, act: str = "uint8", weight: str = "int8", acc: str = "int32"
) -> tirx.PrimFunc:
    """What every dot kernel computes, for tensorize to match: ``lanes`` ``acc``
    accumulators, each adding ``group`` ``act`` x ``weight`` products (the kernels differ
    only in these sizes and types; TVMScript takes them from this closure)."""

    @T.prim_func(s_tir=True)
    def desc(
        a: T.Buffer((group,), act, offset_factor=1),
        b: T.Buffer((lanes, group), weight, offset_factor=1),
        c: T.Buffer((lanes,), acc, offset_factor=1, scope="local"),
    ) -> None:
        with T.sblock("root"):
            T.reads(c[0:lanes], a[0:group], b[0:lanes, 0:group])
            T.writes(c[0:lanes])
            for i in T.serial(0, lanes):
                for k in T.serial(0, group):
                    with T.sblock("update"):
                        vi, vk = T.axis.remap("SR", [i, k])
                        c[vi] = c[vi] + _widen(a[vk], act, acc) * _widen(b[vi, vk], weight, acc)

    return desc


def _dot_vnni(lanes: int) -> tirx.PrimFunc:
    """``vpdpbusd`` on ``lanes`` int32 accumulators (16: zmm; 8: the 256-bit form of
    AVX-512 VL), 4 uint8 x int8 products each, every code; TVMScript takes the sizes
    from this closure."""
    width = 4 * lanes
    intrinsic = f"llvm.x86.avx512.vpdpbusd.{32 * lanes}"
    acc_type, code_type, act_type = f"int32x{lanes}", f"int8x{width}", f"uint8x{width}"

    @T.prim_func(s_tir=True)
    def impl(
        a: T.Buffer((4,), "uint8", offset_factor=1),
        b: T.Buffer((lanes, 4), "int8", offset_factor=1),
        c: T.Buffer((lanes,), "int32", offset_factor=1, scope="local"),
    ) -> None:
        with T.sblock("root"):
            T.reads(c[0:lanes], a[0:4], b[0:lanes, 0:4])
            T.writes(c[0:lanes])
            # LLVM 17+ declares the multiplicands as <N x i8> (older versions: <N/4 x i32>).
            a_i32 = T.reinterpret(a.vload([0], "uint8x4"), dtype="int32")
            a_u8 = T.reinterpret(T.broadcast(a_i32, lanes), dtype=act_type)
            c[T.ramp(T.int32(0), 1, lanes)] = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id(intrinsic),
                c.vload([0], dtype=acc_type),
                a_u8,
                b.vload([0, 0], dtype=code_type),
                dtype=acc_type,
            )

    return impl


VNNI_YMM_INTRIN = "optc_dot_8x4_vnni256_local"


AVX2_INTRIN = "optc_dot_8x2_pmaddwd_local"


@T.prim_func(s_tir=True)
def _dot2_pmaddwd(
    a: T.Buffer((2,), "uint8", offset_factor=1),
    b: T.Buffer((8, 2), "int8", offset_factor=1),
    c: T.Buffer((8,), "int32", offset_factor=1, scope="local"),
) -> None:
    with T.sblock("root"):
        T.reads(c[0:8], a[0:2], b[0:8, 0:2])
        T.writes(c[0:8])
        # (a0, a1) broadcast as one 16-bit word to 16 bytes, zero-extended to int16:
        # vpbroadcastw + vpmovzxbw, two instructions per pair. One expression: names
        # bound here would become local buffers.
        c[T.ramp(T.int32(0), 1, 8)] = c.vload([0], dtype="int32x8") + T.call_llvm_pure_intrin(
            T.llvm_lookup_intrinsic_id("llvm.x86.avx2.pmadd.wd"),
            T.cast(
                T.reinterpret(
                    T.broadcast(T.reinterpret(a.vload([0], "uint8x2"), dtype="uint16"), 8),
                    dtype="uint8x16",
                ),
                "int16x16",
            ),
            T.cast(b.vload([0, 0], dtype="int8x16"), "int16x16"),
            dtype="int32x8",
        )


PMADDUBSW_INTRIN = "optc_dot_8x4_pmaddubsw_local"


@T.prim_func(s_tir=True)
def _dot4_pmaddubsw(
    a: T.Buffer((4,), "uint8", offset_factor=1),
    b: T.Buffer((8, 4), "int8", offset_factor=1),
    c: T.Buffer((8,), "int32", offset_factor=1, scope="local"),
) -> None:
    with T.sblock("root"):
        T.reads(c[0:8], a[0:4], b[0:8, 0:4])
        T.writes(c[0:8])
        # a0..a3 broadcast as one 32-bit word (vpbroadcastd); vpmaddubsw: 16 int16 sums
        # of two uint8 x int8 products (exact for 7-bit weights: 2 * 255 * 64 < 2**15);
        # vpmaddwd with ones: 8 int32 sums of four products; vpaddd into the accumulator.
        c[T.ramp(T.int32(0), 1, 8)] = c.vload([0], dtype="int32x8") + T.call_llvm_pure_intrin(
            T.llvm_lookup_intrinsic_id("llvm.x86.avx2.pmadd.wd"),
            T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id("llvm.x86.avx2.pmadd.ub.sw"),
                T.reinterpret(
                    T.broadcast(T.reinterpret(a.vload([0], "uint8x4"), dtype="int32"), 8),
                    dtype="uint8x32",
                ),
                b.vload([0, 0], dtype="int8x32"),
                dtype="int16x16",
            ),
            T.broadcast(T.int16(1), 16),
            dtype="int32x8",
        )


PAIRS_INTRIN = "optc_dot_8x8_pmaddubsw_pairs_local"


def _pairs_desc() -> tirx.PrimFunc:
    """What ``_dot8_pmaddubsw_pairs`` computes: 8 int32 accumulators, each adding 8
    uint8 x int8 products, the weight tile stored as two 8 x 4 halves (``b[k // 4, i,
    k % 4]``: each half is one ``vpmaddubsw`` operand, as ``PMADDUBSW`` packs it)."""

    @T.prim_func(s_tir=True)
    def desc(
        a: T.Buffer((8,), "uint8", offset_factor=1),
        b: T.Buffer((2, 8, 4), "int8", offset_factor=1),
        c: T.Buffer((8,), "int32", offset_factor=1, scope="local"),
    ) -> None:
        with T.sblock("root"):
            T.reads(c[0:8], a[0:8], b[0:2, 0:8, 0:4])
            T.writes(c[0:8])
            for i in T.serial(0, 8):
                for k in T.serial(0, 8):
                    with T.sblock("update"):
                        vi, vk = T.axis.remap("SR", [i, k])
                        c[vi] = c[vi] + T.cast(a[vk], "int32") * T.cast(
                            b[vk // 4, vi, vk % 4], "int32"
                        )

    return desc


@T.prim_func(s_tir=True)
def _dot8_pmaddubsw_pairs(
    a: T.Buffer((8,), "uint8", offset_factor=1),
    b: T.Buffer((2, 8, 4), "int8", offset_factor=1),
    c: T.Buffer((8,), "int32", offset_factor=1, scope="local"),
) -> None:
    with T.sblock("root"):
        T.reads(c[0:8], a[0:8], b[0:2, 0:8, 0:4])
        T.writes(c[0:8])
        # Two ``vpmaddubsw`` (a0..a3 with the first half, a4..a7 with the second), their
        # int16 pair sums added with ``vpaddw``, then ONE ``vpmaddwd`` with ones and one
        # ``vpaddd``: 64 multiply-adds per 3 multiply-pipe instructions (``PMADDUBSW``:
        # 4). Exact when every weight code w has |w| <= 32: a pair sum is at most
        # 2 * 255 * 32 = 16320 in magnitude (no saturation in ``vpmaddubsw``), two of
        # them at most 32640 <= 32767 (no wrap in ``vpaddw``), and ``vpmaddwd`` sums
        # int16 products into int32 exactly.
        c[T.ramp(T.int32(0), 1, 8)] = c.vload([0], dtype="int32x8") + T.call_llvm_pure_intrin(
            T.llvm_lookup_intrinsic_id("llvm.x86.avx2.pmadd.wd"),
            T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id("llvm.x86.avx2.pmadd.ub.sw"),
                T.reinterpret(
                    T.broadcast(T.reinterpret(a.vload([0], "uint8x4"), dtype="int32"), 8),
                    dtype="uint8x32",
                ),
                b.vload([0, 0, 0], dtype="int8x32"),
                dtype="int16x16",
            )
            + T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id("llvm.x86.avx2.pmadd.ub.sw"),
                T.reinterpret(
                    T.broadcast(T.reinterpret(a.vload([4], "uint8x4"), dtype="int32"), 8),
                    dtype="uint8x32",
                ),
                b.vload([1, 0, 0], dtype="int8x32"),
                dtype="int16x16",
            ),
            T.broadcast(T.int16(1), 16),
            dtype="int32x8",
        )


@dataclasses.dataclass(frozen=True)
class DotKernel:
    """One packed integer dot-product instruction: ``lanes`` int32 outputs, each the sum
    of ``group`` uint8 x ``weight_dtype`` products; ``max_acc`` accumulator registers;
    ``weight_range``: the weight codes it computes exactly (None: every int8 code);
    ``halves``: how many ``[lanes, group / halves]`` tiles one weight tile is stored as
    (the packed weight is ``[N/lanes, K/group, lanes, group]`` for 1, else
    ``[N/lanes, K/group, halves, lanes, group / halves]``); ``act_dtype`` /
    ``acc_dtype``: the activation and accumulator types (uint8 / int32 but for
    ``BF16``); ``llvm_ir``: LLVM IR the instruction's wrapper needs linked in."""

    name: str
    lanes: int
    group: int
    weight_dtype: str
    max_acc: int
    intrin: str
    desc: Callable[..., None]
    impl: Callable[..., None]
    weight_range: tuple[int, int] | None = None
    halves: int = 1
    act_dtype: str = "uint8"
    acc_dtype: str = "int32"
    llvm_ir: str | None = None

    @property
    def tile(self) -> tuple[int, ...]:
        """The trailing dimensions of the packed weight: one tile of the instruction."""
        if self.halves == 1:
            return (self.lanes, self.group)
        return (self.halves, self.lanes, self.group // self.halves)

    def exact_for(self, weight: np.ndarray) -> bool:
        """Whether every code of the constant ``weight`` lies in ``weight_range``."""
        if self.weight_range is None or weight.size == 0:
            return True
        low, high = self.weight_range
        return bool(weight.min() >= low and weight.max() <= high)

    def intrinsic(self) -> str:
        if s_tir.TensorIntrin.get(self.intrin, allow_missing=True) is None:
            s_tir.TensorIntrin.register(self.intrin, self.desc, self.impl)
        return self.intrin


VNNI = DotKernel(
    "vnni", LANES, GROUP, "int8", _MAX_ACC, INTRIN, _dot_desc(LANES, GROUP), _dot_vnni(LANES)
)
# 16 ymm registers: 12 accumulators, the rest for the broadcast pair and weight tiles.
AVX2 = DotKernel("avx2", 8, 2, "int8", 12, AVX2_INTRIN, _dot_desc(8, 2), _dot2_pmaddwd)
# Weight codes ``vpmaddubsw`` cannot saturate on: 7-bit, oneDNN's AVX2 int8 "scale
# adjust" (``optc.quant.kernels`` quantizes for it). 16 ymm registers: the ones vector,
# the int16 products, the broadcasts and weight tiles, and the accumulators.
SEVEN_BIT = (-64, 63)
PMADDUBSW = DotKernel(
    "avx2-u8",
    8,
    4,
    "int8",
    10,
    PMADDUBSW_INTRIN,
    _dot_desc(8, 4),
    _dot4_pmaddubsw,
    weight_range=SEVEN_BIT,
)
# Weight codes for which two ``vpmaddubsw`` results add exactly in int16 (the proof is
# in ``_dot8_pmaddubsw_pairs``): 6-bit codes, [-32, 31], and 32 as well.
SIX_BIT = (-32, 32)
PMADDUBSW_PAIRS = DotKernel(
    "avx2-u8-pairs",
    8,
    8,
    "int8",
    10,
    PAIRS_INTRIN,
    _pairs_desc(),
    _dot8_pmaddubsw_pairs,
    weight_range=SIX_BIT,
    halves=2,
)
# 256-bit ``vpdpbusd`` (AVX-512 VNNI + VL) for output widths that are a multiple of 8 but
# not of 16 (EfficientNet-Lite0's 24 and 40 channels), which ran on ``vpmaddwd``: its
# weight is packed as ``PMADDUBSW``'s ``[N/8, K/4, 8, 4]`` (``vnni_pack``), and on a VNNI
# CPU the schedule runs that packing with this instruction (exact for every code).
VNNI_YMM = DotKernel(
    "vnni-ymm", 8, GROUP, "int8", _MAX_ACC, VNNI_YMM_INTRIN, _dot_desc(8, GROUP), _dot_vnni(8)
)


def _bf16_kernel(lanes: int, bits: bool = False) -> DotKernel:
    """bfloat16 x bfloat16 -> float32 on AVX-512 BF16's ``vdpbf16ps`` (``bf16_dot``) with
    ``lanes`` accumulators, weights packed ``[N/lanes, K/2, lanes, 2]``; ``bits``: on
    activations held as uint16 bits (a padded copy inside a conv kernel), the same packing,
    which the schedule picks by the activation it reads."""
    act = "uint16" if bits else "bfloat16"
    return DotKernel(
        f"bf16-{lanes}{'-bits' if bits else ''}",
        lanes,
        bf16_dot.PAIR,
        "bfloat16",
        _MAX_ACC,
        bf16_dot.intrin_name(lanes, bits),
        _dot_desc(lanes, bf16_dot.PAIR, act, "bfloat16", "float32"),
        bf16_dot.dot_impl(act, lanes),
        act_dtype=act,
        acc_dtype="float32",
        llvm_ir=bf16_dot.WRAPPER_IR[lanes],
    )


# zmm: 16 outputs per instruction; the 32 registers hold 24 accumulators as for VNNI.
BF16 = _bf16_kernel(bf16_dot.LANES)
# ymm (AVX-512 VL) for output widths a multiple of 8 but not of 16: EfficientNet-Lite0's
# 24- and 40-channel project convs and its 1000-class classifier, which in bfloat16 had
# run TVM's generic loop on widened loads (the classifier at 6 GFLOP/s).
BF16_YMM = _bf16_kernel(bf16_dot.YMM_LANES)
_ON_BITS = {BF16: _bf16_kernel(bf16_dot.LANES, True),
            BF16_YMM: _bf16_kernel(bf16_dot.YMM_LANES, True)}
KERNELS = (VNNI, AVX2, PMADDUBSW, PMADDUBSW_PAIRS, BF16, BF16_YMM)
"""The packings ``packed_kernel`` tells apart (``VNNI_YMM`` shares ``PMADDUBSW``'s)."""


def packed_kernel(block: s_tir.SBlock) -> tuple[DotKernel, tirx.Buffer] | None:
    """The kernel and packed ``[N/lanes, K/group, *tile]`` weight an int32 (float32 for
    ``BF16``) block reads, if it reads one."""
    if len(block.writes) != 1:
        return None
    written = str(block.writes[0].source.dtype)
    for region in block.reads:
        buf = region.source
        shape = (
            [int(d) for d in buf.shape]
            if all(isinstance(d, tirx.IntImm) for d in buf.shape)
            else []
        )
        for kernel in KERNELS:
            if (
                written == kernel.acc_dtype
                and str(buf.dtype) == kernel.weight_dtype
                and len(shape) == 2 + len(kernel.tile)
                and tuple(shape[2:]) == kernel.tile
            ):
                return kernel, buf
    return None


def _reads_dtype(block: s_tir.SBlock, dtype: str) -> bool:
    return any(str(region.source.dtype) == dtype for region in block.reads)


def kernel_available(kernel: DotKernel, cpu: CpuInfo) -> bool:
    """Whether ``cpu`` runs ``kernel``'s instruction (``vnni_pack`` packs for AVX2 only
    where the target has it; 256-bit vectors are what the schedule needs of it)."""
    if kernel.weight_dtype == "bfloat16":
        return cpu.bf16
    return cpu.vnni if kernel is VNNI else cpu.vector_bits >= 256


def _tile_avx2(rows: int, vectors: int, max_acc: int) -> tuple[int, int]:
    """(rows, vectors) for ``vpmaddwd``: exact divisors minimising instructions per
    multiply-add. Per pair of k: a broadcast (2 instructions) per row, a weight load per
    vector, a ``vpmaddwd`` and an add per accumulator; latency is short (no long FMA
    chains to hide), so wide tiles beat tall ones."""
    best, best_cost = (1, 1), math.inf
    for v in (d for d in range(1, min(vectors, max_acc) + 1) if vectors % d == 0):
        for r in (d for d in range(1, min(rows, _MAX_ROWS) + 1) if rows % d == 0):
            if r * v <= max_acc and (2 * r + v + 2 * r * v) / (r * v) < best_cost:
                best, best_cost = (r, v), (2 * r + v + 2 * r * v) / (r * v)
    return best


def _tile_pmaddubsw(rows: int, vectors: int, max_acc: int) -> tuple[int, int]:
    """(rows, vectors) for ``vpmaddubsw``: per four k, a ``vpbroadcastd`` per row, a
    weight load per vector, and three instructions per accumulator; exact divisors."""
    best, best_cost = (1, 1), math.inf
    for v in (d for d in range(1, min(vectors, max_acc) + 1) if vectors % d == 0):
        for r in (d for d in range(1, min(rows, _MAX_ROWS) + 1) if rows % d == 0):
            cost = (r + v + 3 * r * v) / (r * v)
            if r * v <= max_acc and cost < best_cost:
                best, best_cost = (r, v), cost
    return best


# Bytes of a weight panel (``vectors * 8 * K`` int8) that stay in a 32 KiB L1 while the
# rows of a tile stream past it: above it every row's weight loads come from L2.
_PANEL_L1_BYTES = 24 * 1024
# The smallest K the pairs kernel takes (``vnni_pack``): below it the loop over k is too
# short to gain (EfficientNet-Lite0's 1x1 convs 24 -> 144 at 56x56 and 16 -> 96 at
# 112x112 ran 1.07-2.2x the 7-bit kernel's time; 32 -> 16 at 112x112 0.97x, 40 -> 240 at
# 28x28 0.95x; paired, 2 threads, under load).
PAIRS_MIN_K = 32


def _tile_pairs(rows: int, vectors: int, max_acc: int, depth: int) -> tuple[int, int]:
    """(rows, vectors) for ``PMADDUBSW_PAIRS``: per eight k, two ``vpbroadcastd`` per row
    and five vector instructions per accumulator (Zen 3 is bound by those, on its four
    vector pipes, more than by its two multiply pipes: a 1 x 8 tile ran 0.84x the 7-bit
    kernel's time, (2 + 40) / (2 + 48) instructions, one thread, 128 x 384 -> 384), and
    one for the loop. The weight loads fold into ``vpmaddubsw`` and cost nothing while
    the panel of ``vectors`` stays in L1 for the next tile of rows (or there is none),
    else 1.5 each (16 x 1536 -> 384: 1 x 8 tiles ran 1.08x the 7-bit kernel's time, 4 x 2
    tiles 0.94x; 16 x 384 -> 1536: 0.92x and 0.96x). Exact divisors."""
    best, best_cost = (1, 1), math.inf
    for v in (d for d in range(1, min(vectors, max_acc) + 1) if vectors % d == 0):
        for r in (d for d in range(1, min(rows, _MAX_ROWS) + 1) if rows % d == 0):
            in_l1 = v * 8 * depth <= _PANEL_L1_BYTES or r == rows
            cost = (2 * r + 5 * r * v + (0.0 if in_l1 else 1.5) * 2 * v + 1) / (r * v)
            if r * v <= max_acc and cost < best_cost:
                best, best_cost = (r, v), cost
    return best


def _tile(rows: int, vectors: int, max_acc: int = _MAX_ACC) -> tuple[int, int]:
    """(rows, vectors) of the accumulator tile: exact divisors, largest area in budget."""
    best = (1, 1)
    for v in (d for d in range(1, vectors + 1) if vectors % d == 0 and d <= 4):
        for r in (d for d in range(1, min(rows, _MAX_ROWS) + 1) if rows % d == 0):
            if r * v <= max_acc and (min(r, 4), r * v) > (min(best[0], 4), best[0] * best[1]):
                best = (r, v)
    return best


def schedule_vnni(
    sch: s_tir.Schedule, info: SBlockInfo, epilogue: SBlockInfo | None, cpu: CpuInfo
) -> bool:
    """Schedule the packed int8 contraction ``info`` (and its epilogue); False if it is
    not one (spatial axes ``[batch..., row, col]``, one reduction axis over K)."""
    found = packed_kernel(sch.get(info.block_rv))
    if found is None or not kernel_available(found[0], cpu):
        return False
    kernel = found[0]
    if kernel is PMADDUBSW and cpu.vnni:
        kernel = VNNI_YMM  # the same packing; one instruction for every code
    if kernel in _ON_BITS and _reads_dtype(sch.get(info.block_rv), "uint16"):
        kernel = _ON_BITS[kernel]
    kinds = [it.kind for it in info.iters]
    if kinds[-1] != "R" or kinds[:-1] != ["S"] * (len(kinds) - 1) or len(kinds) < 2:
        return False
    # A single row (a classifier's matrix-vector product, ``[1, K] x [K, N]``) has no
    # row iterator left after normalization (unit loops are dropped): [col, k] only.
    # Refusing it sent EfficientNet-Lite0's 1280 -> 1000 classifier to the generic
    # loop: 12.9 ms of the int8 model's 22.8 ms (Zen 3, one thread), 15.7 ms alone.
    has_row = len(kinds) >= 3
    extents = [int(it.dom) for it in info.iters]
    rows = extents[-3] if has_row else 1
    cols, depth = extents[-2], extents[-1]
    if cols % kernel.lanes or depth % kernel.group:
        return False
    loops = [it.loop_rv for it in info.iters]
    if kernel is PMADDUBSW_PAIRS:
        tile_rows, tile_vectors = _tile_pairs(rows, cols // kernel.lanes, kernel.max_acc, depth)
    else:
        tile = {AVX2.name: _tile_avx2, PMADDUBSW.name: _tile_pmaddubsw}.get(kernel.name, _tile)
        tile_rows, tile_vectors = tile(rows, cols // kernel.lanes, kernel.max_acc)
    c_out, c_vec, c_lane = sch.split(loops[-2], [None, tile_vectors, kernel.lanes])
    k_out, k_in = sch.split(loops[-1], [None, kernel.group])
    if has_row:
        r_out, r_in = sch.split(loops[-3], [None, tile_rows])
        outer = [*loops[:-3], c_out, r_out]
        sch.reorder(*outer, k_out, r_in, c_vec, c_lane, k_in)
    else:
        outer = [*loops[:-2], c_out]
        sch.reorder(*outer, k_out, c_vec, c_lane, k_in)
    writer = write_tile_from_registers(
        sch, info.block_rv, epilogue.block_rv if epilogue else None, outer[-1]
    )
    unroll_and_vectorize(sch, sch.get_loops(writer)[len(outer) :], kernel.lanes)
    # Only the outer tile loops run in parallel, the rest serially inside each parallel
    # iteration: TVM allocates the tile's accumulator buffer once per parallel iteration.
    keep = fuse_tile_loops(sch, outer, cpu.cores, math.prod(extents) >= PARALLEL_MIN_MACS)
    init = sch.decompose_reduction(info.block_rv, k_out)
    # The init's loops below the tile loops; the serial tile loops stay loops.
    unroll_and_vectorize(sch, sch.get_loops(init)[1 + keep :], kernel.lanes)
    if has_row:
        sch.unroll(r_in)
    sch.unroll(c_vec)
    sch.tensorize(c_lane, kernel.intrinsic())
    if kernel.llvm_ir is not None:  # the LLVM code generator links it into the module
        sch.annotate(sch.get_loops(init)[0], "pragma_import_llvm", kernel.llvm_ir)
    logger.debug("%s contraction %s: tile %d x %d", kernel.name, info.name, tile_rows, tile_vectors)
    return True
