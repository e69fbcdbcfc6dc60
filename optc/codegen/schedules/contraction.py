"""Register-blocked, vectorized, parallel schedule for contractions (conv2d NHWC, matmul).

Loop nest produced for ``O[.., r, v] += A[.., r, k] * B[.., k, v]`` (conv: r = output
column, v = output channel, k = (ky, kx, c_in))::

    parallel for (batch, v_outer, outer, r_outer):     # fused
        acc[rb, nv*lanes] = 0                          # local: lives in registers
        for k...:                                      # reduction, weights panel stays in L2
            for rb (unrolled):
                for nv (unrolled):
                    for lanes (vectorized):  acc += A[.., r, k] * B[.., k, v]
        O[..] = epilogue(acc)                          # bias/BN/ReLU fused, vectorized

The accumulator tile ``rb x (nv * lanes)`` is sized to fit the register file; ``v`` is the
contiguous axis of the output and of the weights, ``A`` is broadcast.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

from tvm import s_tir
from tvm.s_tir.dlight.analysis import SBlockInfo
from tvm.s_tir.schedule import ExprRV

from .analysis import Contraction
from .hw import CpuInfo
from .loops import unroll_and_vectorize

logger = logging.getLogger(__name__)

# Accumulator vectors kept live; the rest of the register file holds operands.
_MAX_ACC_FRACTION = 0.75
# A row tile smaller than this leaves the FMA pipes waiting on latency.
_MIN_ROWS = 4
# Row tiles are unrolled; beyond this the code size grows without gain.
_MAX_ROWS = 16
# A tile narrower than a cache line reads half of every weight line it touches (8-lane
# floats: 32 of 64 bytes); the other half waits for the next tile, often evicted by then.
_LINE_BYTES = 64


# Below this many multiply-adds (~20 us on one core) a parallel launch risks more than
# it saves: TVM's thread pool splits the loop statically, so a worker that the OS has
# not scheduled (a busy machine) stalls the whole kernel at the join. Measured on a quiet
# 2-core Zen 3 with a two-thread pool, 1 M against the earlier 8 M: EfficientNet-Lite0
# 0.88x, MiniLM 0.84x, ShuffleNet 1.03x (median; 0.93x best). (The 8 M had been chosen
# with TVM's default pool, a single thread on this VM, where no parallel loop can pay.)
PARALLEL_MIN_MACS = 1_000_000


def _macs(con: Contraction) -> int:
    return math.prod(int(it.dom) for it in con.info.iters)


@dataclass(frozen=True)
class Tile:
    """Register tile: ``rows`` output rows by ``vectors`` SIMD vectors of ``lanes``."""

    rows: int
    vectors: int
    lanes: int


Factor = int | ExprRV
"""A split factor: a constant, or a tuner's sampled decision (``sch.sample_categorical``)."""


@dataclass(frozen=True)
class Knobs:
    """The choices a tuner varies (``space.py``); the defaults reproduce the untuned schedule.

    ``factors(sch, tile, rows, cols)`` returns the (rows, vectors) split factors for an
    output of ``rows`` rows and ``cols`` columns a vector tile may span: sampled
    decisions whose default is ``tile``. ``parallel`` overrides the ``PARALLEL_MIN_MACS`` rule.
    ``rows_outside`` puts the vector-tile loop innermost of the tile loops, so that one
    block of input rows is reused by every weight panel (instead of one weight panel by
    every row block): better where the weights are small and the image large.
    """

    factors: Callable[[s_tir.Schedule, Tile, int, int], tuple[Factor, Factor]] | None = None
    parallel: bool | None = None
    rows_outside: bool = False


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def choose_tile(rows: int, cols: int, cpu: CpuInfo, dtype_bits: int, group: int = 0) -> Tile | None:
    """Pick the register tile for a ``rows x cols`` output, or None if ``cols`` cannot be
    vectorized. Exact divisors are preferred (no tail predicates), then tile area. With
    ``group``, the tile width (vectors x lanes) must divide it."""
    span = math.gcd(cols, group) if group else cols
    lanes = cpu.lanes(dtype_bits)
    while lanes > 1 and span % lanes:
        lanes //= 2
    if lanes < 2:
        return None
    budget = int(cpu.registers * _MAX_ACC_FRACTION)
    best: tuple[tuple[int, ...], Tile] | None = None
    for vectors in _divisors(span // lanes):
        if vectors > budget:
            break
        max_rows = max(1, min(_MAX_ROWS, budget // vectors, rows))
        for r in range(1, max_rows + 1):
            exact = rows % r == 0
            waste = (-rows) % r
            area = r * vectors
            line = min(vectors * lanes * dtype_bits // 8, _LINE_BYTES)
            # Prefer: enough rows to hide FMA latency, whole cache lines of weights, exact
            # split, big area, few vectors.
            score = (min(r, _MIN_ROWS, rows), line, exact, -waste * vectors, area, -vectors)
            if best is None or score > best[0]:
                best = (score, Tile(rows=r, vectors=vectors, lanes=lanes))
    return best[1] if best else None


def schedule_contraction(
    sch: s_tir.Schedule,
    con: Contraction,
    epilogue: SBlockInfo | None,
    cpu: CpuInfo,
    knobs: Knobs | None = None,
) -> bool:
    """Schedule ``con`` (and its elementwise ``epilogue``) in place. False if not applicable.

    ``knobs`` (tuning only) replaces the fixed choices by the tuner's decisions."""
    knobs = knobs or Knobs()
    rows = con.extent(con.row) if con.row is not None else 1
    tile = choose_tile(rows, con.extent(con.vec), cpu, con.dtype_bits, con.group)
    if tile is None:
        return False
    span = math.gcd(con.extent(con.vec), con.group) if con.group else con.extent(con.vec)
    n_rows, n_vectors = (
        knobs.factors(sch, tile, rows, span) if knobs.factors else (tile.rows, tile.vectors)
    )
    block = con.info.block_rv
    loops = [it.loop_rv for it in con.info.iters]
    v_outer, v_vec, v_lane = sch.split(loops[con.vec], [None, n_vectors, tile.lanes])
    if con.row is not None:
        r_outer, r_inner = sch.split(loops[con.row], [None, n_rows])
        rows_inner = [r_inner]
        rows_outer = [r_outer]
    else:
        rows_inner, rows_outer = [], []
    spatial = [loops[k] for k in con.outer]
    if knobs.rows_outside:
        outer = [loops[k] for k in con.weight_batch] + spatial + rows_outer + [v_outer]
    else:
        outer = [loops[k] for k in con.weight_batch] + [v_outer] + spatial + rows_outer
    reduce = [loops[k] for k in con.reduce]
    sch.reorder(*outer, *reduce, *rows_inner, v_vec, v_lane)

    tile_loop = outer[-1]
    if epilogue is not None:
        sch.reverse_compute_at(epilogue.block_rv, tile_loop, preserve_unit_loops=True)
        sch.set_scope(block, 0, "local")
        writer = epilogue.block_rv
    else:
        writer = sch.cache_write(block, 0, "local")
        sch.reverse_compute_at(writer, tile_loop, preserve_unit_loops=True)
    # Annotate and parallelize before decomposing: afterwards the update block has no
    # init, and the vectorize/parallel checks no longer accept it as a reduction block.
    for loop in rows_inner:
        sch.unroll(loop)
    sch.unroll(v_vec)
    sch.vectorize(v_lane)
    unroll_and_vectorize(sch, sch.get_loops(writer)[len(outer) :], tile.lanes)
    fused = sch.fuse(*outer) if len(outer) > 1 else outer[0]
    parallel = _macs(con) >= PARALLEL_MIN_MACS if knobs.parallel is None else knobs.parallel
    if cpu.cores > 1 and parallel:
        sch.parallel(fused)
    if reduce:
        init = sch.decompose_reduction(block, reduce[0])
        unroll_and_vectorize(sch, sch.get_loops(init)[1:], tile.lanes)
    logger.debug("contraction %s: tile %s", con.info.name, tile)
    return True
