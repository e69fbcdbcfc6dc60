"""Schedule int8 contractions on packed weights with AVX-512 VNNI (``vpdpbusd``).

``optc.codegen.quantized`` gives a uint8 x int8 -> int32 matmul whose weights it packed
at compile time as ``Wp[N/16, K/4, 16, 4]`` (``Wp[n//16, k//4, n%16, k%4] = W[k, n]``)
when the target has VNNI. One ``vpdpbusd`` multiplies 4 consecutive uint8 activations
(broadcast) with a 16 x 4 int8 weight tile and adds the 4 products of each row to 16
int32 lanes: 64 multiply-adds per instruction, four times a float32 FMA. The loop nest::

    parallel for (batch, row_outer, col_outer):
        acc[rows, vectors * 16] = 0                    # int32, in registers
        for ko in K / 4:
            for r in rows (unrolled): for v in vectors (unrolled):
                acc[r, v*16:(v+1)*16] = vpdpbusd(acc, bcast(A[r, 4ko:4ko+4]), Wp[v, ko])
        O[..] = epilogue(acc)                          # rescale, bias, ... fused

A contraction that does not read such a packed weight is left to ``contraction.py``.
"""

from __future__ import annotations

import logging
import math

from tvm import s_tir, tirx
from tvm.s_tir.dlight.analysis import SBlockInfo
from tvm.script import tirx as T

from .contraction import PARALLEL_MIN_MACS
from .hw import CpuInfo
from .loops import unroll_and_vectorize

logger = logging.getLogger(__name__)

LANES, GROUP = 16, 4  # int32 lanes of a 512-bit register; uint8 products summed per lane
# Accumulator registers of a tile; the rest hold the broadcast activations and weights.
_MAX_ACC = 24
_MAX_ROWS = 8


# TVM's own ``dot_16x4_vnni`` wants its accumulator in global memory; ours is a register
# tile (``local``), so the same instruction is registered with a local accumulator.
INTRIN = "optc_dot_16x4_vnni_local"


@T.prim_func(s_tir=True)
def _dot_desc(a: T.Buffer((4,), "uint8", offset_factor=1),
              b: T.Buffer((16, 4), "int8", offset_factor=1),
              c: T.Buffer((16,), "int32", offset_factor=1, scope="local")) -> None:
    with T.sblock("root"):
        T.reads(c[0:16], a[0:4], b[0:16, 0:4])
        T.writes(c[0:16])
        for i in T.serial(0, 16):
            for k in T.serial(0, 4):
                with T.sblock("update"):
                    vi, vk = T.axis.remap("SR", [i, k])
                    c[vi] = c[vi] + T.cast(a[vk], "int32") * T.cast(b[vi, vk], "int32")


@T.prim_func(s_tir=True)
def _dot_vnni(a: T.Buffer((4,), "uint8", offset_factor=1),
              b: T.Buffer((16, 4), "int8", offset_factor=1),
              c: T.Buffer((16,), "int32", offset_factor=1, scope="local")) -> None:
    with T.sblock("root"):
        T.reads(c[0:16], a[0:4], b[0:16, 0:4])
        T.writes(c[0:16])
        # LLVM 17+ declares the multiplicands as <64 x i8> (older versions: <16 x i32>).
        a_i32 = T.reinterpret(a.vload([0], "uint8x4"), dtype="int32")
        a_u8 = T.reinterpret(T.broadcast(a_i32, 16), dtype="uint8x64")
        c[T.ramp(T.int32(0), 1, 16)] = T.call_llvm_pure_intrin(
            T.llvm_lookup_intrinsic_id("llvm.x86.avx512.vpdpbusd.512"),
            c.vload([0], dtype="int32x16"), a_u8, b.vload([0, 0], dtype="int8x64"),
            dtype="int32x16")


def _intrinsic() -> str:
    if s_tir.TensorIntrin.get(INTRIN, allow_missing=True) is None:
        s_tir.TensorIntrin.register(INTRIN, _dot_desc, _dot_vnni)
    return INTRIN


def packed_weight(block: s_tir.SBlock) -> tirx.Buffer | None:
    """The int8 ``[N/16, K/4, 16, 4]`` weight an int32 block reads, if it reads one."""
    if len(block.writes) != 1 or str(block.writes[0].source.dtype) != "int32":
        return None
    for region in block.reads:
        buf = region.source
        shape = [int(d) for d in buf.shape] if all(
            isinstance(d, tirx.IntImm) for d in buf.shape) else []
        if str(buf.dtype) == "int8" and len(shape) == 4 and shape[2:] == [LANES, GROUP]:
            return buf
    return None


def _tile(rows: int, vectors: int) -> tuple[int, int]:
    """(rows, vectors) of the accumulator tile: exact divisors, largest area in budget."""
    best = (1, 1)
    for v in (d for d in range(1, vectors + 1) if vectors % d == 0 and d <= 4):
        for r in (d for d in range(1, min(rows, _MAX_ROWS) + 1) if rows % d == 0):
            if r * v <= _MAX_ACC and (min(r, 4), r * v) > (min(best[0], 4), best[0] * best[1]):
                best = (r, v)
    return best


def schedule_vnni(sch: s_tir.Schedule, info: SBlockInfo, epilogue: SBlockInfo | None,
                  cpu: CpuInfo) -> bool:
    """Schedule the packed int8 contraction ``info`` (and its epilogue); False if it is
    not one (spatial axes ``[batch..., row, col]``, one reduction axis over K)."""
    block = sch.get(info.block_rv)
    if packed_weight(block) is None or not cpu.vnni:
        return False
    kinds = [it.kind for it in info.iters]
    if kinds[-1] != "R" or kinds[:-1] != ["S"] * (len(kinds) - 1) or len(kinds) < 3:
        return False
    extents = [int(it.dom) for it in info.iters]
    rows, cols, depth = extents[-3], extents[-2], extents[-1]
    if cols % LANES or depth % GROUP:
        return False
    loops = [it.loop_rv for it in info.iters]
    tile_rows, tile_vectors = _tile(rows, cols // LANES)
    r_out, r_in = sch.split(loops[-3], [None, tile_rows])
    c_out, c_vec, c_lane = sch.split(loops[-2], [None, tile_vectors, LANES])
    k_out, k_in = sch.split(loops[-1], [None, GROUP])
    outer = [*loops[:-3], c_out, r_out]
    sch.reorder(*outer, k_out, r_in, c_vec, c_lane, k_in)
    if epilogue is not None:
        sch.reverse_compute_at(epilogue.block_rv, outer[-1], preserve_unit_loops=True)
        sch.set_scope(info.block_rv, 0, "local")
        writer = epilogue.block_rv
    else:
        writer = sch.cache_write(info.block_rv, 0, "local")
        sch.reverse_compute_at(writer, outer[-1], preserve_unit_loops=True)
    unroll_and_vectorize(sch, sch.get_loops(writer)[len(outer):], LANES)
    fused = sch.fuse(*outer)
    if cpu.cores > 1 and math.prod(extents) >= PARALLEL_MIN_MACS:
        sch.parallel(fused)
    init = sch.decompose_reduction(info.block_rv, k_out)
    unroll_and_vectorize(sch, sch.get_loops(init)[1:], LANES)
    sch.unroll(r_in)
    sch.unroll(c_vec)
    sch.tensorize(c_lane, _intrinsic())
    logger.debug("vnni contraction %s: tile %d x %d", info.name, tile_rows, tile_vectors)
    return True
