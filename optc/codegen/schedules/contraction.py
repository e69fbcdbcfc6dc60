"""Register-blocked, vectorized, parallel schedule for contractions (conv2d NHWC, matmul).

Loop nest produced for ``O[.., r, v] += A[.., r, k] * B[.., k, v]`` (conv: r = output
column, v = output channel, k = (ky, kx, c_in))::

    parallel for (batch, v_outer, ...):                # fused: >= 4 iterations per core
      for (..., outer, r_outer):                       # serial: the rest of the tiles
        acc[rb, nv*lanes] = 0                          # local: lives in registers
        for k...:                                      # reduction, weights panel stays in L2
            for rb (unrolled):
                for nv (unrolled):
                    for lanes (vectorized):  acc += A[.., r, k] * B[.., k, v]
        O[..] = epilogue(acc)                          # bias/BN/ReLU fused, vectorized

The accumulator tile ``rb x (nv * lanes)`` is sized to fit the register file; ``v`` is the
contiguous axis of the output and of the weights, ``A`` is broadcast.

Why the tile loops are split into a parallel head and a serial tail
(``serial_tile_loops``): TVM allocates the tile's local buffer at the top of each
parallel iteration, through ``TVMBackendAllocWorkspace``/``FreeWorkspace`` (a call into
the runtime's pool each way, then the accumulators stored to it and read back for the
epilogue), and with every tile its own parallel iteration that was once per tile. A
ResNet-50 expand conv (56x56, 64 -> 256 channels, K = 64: ~400 FMA cycles per 6x2 tile)
spent ~30 % of its time there: the same kernel made serial ran 0.69x the time. With
the tiles of a chunk serial inside one parallel iteration, per kernel, alone, one
thread, interleaved A/B on a 2-core Zen 3 under load: ResNet-50's 1x1 convs with K = 64
0.59x (with the residual add) and 0.75x, K = 128 with the residual add 0.69x, 64 -> 64
0.83x, 256 -> 1024 with the residual add 0.87x, the others 0.90-0.99x.

Inside the whole model (one thread, paired against the unchunked build, under load):
ResNet-50's 56x56 expand conv 30.7 -> 53.3 GFLOP/s, 28x28 expand 45.5 -> 59.9, 56x56
projection 47.2 -> 73.4, 64 -> 64 1x1 49.3 -> 72.6, stem 65.6 -> 76.5; whole models 0.90x
(ResNet-50), 0.86x SqueezeNet, 0.92x Inception v2, 0.93x DenseNet-121, 0.83x
EfficientNet-Lite0, 0.79x ShuffleNet; two threads 0.94x, 0.91x, 0.93x, 0.95x, 0.86x, 0.82x.

(Tested and refuted, same setting: the weight panel re-reading the whole input from L3
for lack of reduction-axis blocking. The 1x1 convs reading the biggest inputs, 14x14x1024
and 28x28x512, were the fastest, 84-88 GFLOP/s alone; the slowest were those with the
shortest reduction. Blocks of panels, ``Knobs.panel_block``, which keep the rows a tile
reads in L1 for several panels, are off by default: ``PANEL_BLOCK_BYTES``.)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction

from tvm import s_tir, tirx
from tvm.s_tir.dlight.analysis import SBlockInfo
from tvm.s_tir.schedule import ExprRV, LoopRV, SBlockRV

from .analysis import Contraction, uses, var_coefficient
from .hw import CACHE_LINE_BYTES, CpuInfo
from .loops import unroll_and_vectorize, vector_split, write_tile_from_registers

logger = logging.getLogger(__name__)

# Accumulator vectors kept live; the rest of the register file holds operands.
_MAX_ACC_FRACTION = 0.75
# A row tile smaller than this reuses each weight vector too little: its loads, not the
# FMAs, set the pace.
_MIN_ROWS = 4
# Independent accumulator chains an FMA loop needs to keep the pipes busy: 2 FMA pipes x
# 4 cycles latency = 8 in theory (Zen 3 and Zen 5 alike); 10 fits the measurements, as a
# loop at exactly 8 stalls on any late operand. Interleaved A/B per kernel on a 2-core
# Zen 3 (AVX2, one thread, under load, min of 20-60 rounds): 6x2 (12 chains) instead of
# 4x2 (8) ran the 28- to 112-wide convs of ResNet-50, Inception v1/v2, DenseNet-121 and
# SqueezeNet 0.84-0.98x (VGG-19's 28-wide 3x3 convs 0.68-0.75x); for 14 rows 5x2
# (tiles 5+5+4) beat 4x2 and 6x2 (6+6+2) by 1.1x, for 7 rows 4x2 (4+3) beat 5x2 (5+2)
# by 1.03-1.09x: a tail tile costs as much as one of this many chains.
_FMA_CHAINS = 10
# Row tiles are unrolled; beyond this the code size grows without gain.
_MAX_ROWS = 16


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
    ``pad_in_tile`` computes the zero-padded input a tile reads inside the tile loop
    (a few rows, in cache) instead of a padded copy of the whole input before the
    kernel; None: the measured default (``pad_in_tile_default``).
    ``panel_block`` (vector tiles per block) orders the tile loops ``block of panels,
    rows, panel in block``: the rows a tile reads stay in L1 for every panel of the
    block; None: ``panel_block_default``; 1: off.
    """

    factors: Callable[[s_tir.Schedule, Tile, int, int], tuple[Factor, Factor]] | None = None
    parallel: bool | None = None
    rows_outside: bool = False
    pad_in_tile: bool | None = None
    panel_block: int | None = None


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def choose_tile(rows: int, cols: int, cpu: CpuInfo, dtype_bits: int, group: int = 0) -> Tile | None:
    """Pick the register tile for a ``rows x cols`` output, or None if ``cols`` cannot be
    vectorized. Enough rows to reuse the weights, whole cache lines of weights, then the
    fewest FMA issue slots (``_tile_cycles``, the partial last row tile included), then
    exact divisors (no tail predicates), then tile area. With ``group``, the tile width
    (vectors x lanes) must divide it."""
    span = math.gcd(cols, group) if group else cols
    lanes = cpu.lanes(dtype_bits)
    while lanes > 1 and span % lanes:
        lanes //= 2
    if lanes < 2:
        return None
    budget = int(cpu.registers * _MAX_ACC_FRACTION)
    best: tuple[tuple[int | Fraction, ...], Tile] | None = None
    # A span of five vectors (a conv group of 40 channels) has no tile of two to four
    # vectors: there a wide tile of fewer rows counts as reusing its weights enough
    # when its loads per FMA are no more than a full-height tile's (2x5: 7 loads per 10
    # FMAs, against 10x1's 11 per 10; 0.57x the time on ShuffleNet's 28x28 groups of 40,
    # one thread, interleaved A/B on a 2-core Zen 3 under load).
    narrow = not any((span // lanes) % d == 0 for d in range(2, _MIN_ROWS + 1))
    full_loads = Fraction(_MIN_ROWS + 2, _MIN_ROWS * 2)
    for vectors in _divisors(span // lanes):
        if vectors > budget:
            break
        max_rows = max(1, min(_MAX_ROWS, budget // vectors, rows))
        for r in range(1, max_rows + 1):
            if r > 1 and r * vectors + vectors + 1 > cpu.registers:
                # Accumulators, the weight vectors each of the r rows reuses, and a
                # broadcast: beyond the register file LLVM spills in the inner loop (AVX2,
                # a 3x4 tile: Inception v1's 6x6 1x1 conv 1.6x slower than 6x2, in A/B).
                continue
            exact = rows % r == 0
            waste = (-rows) % r
            area = r * vectors
            # A tile narrower than a cache line reads half of every weight line it
            # touches (8-lane floats: 32 of 64 bytes); the other half waits for the next
            # tile, often evicted by then.
            line = min(vectors * lanes * dtype_bits // 8, CACHE_LINE_BYTES)
            cycles = _tile_cycles(rows, r, vectors) * (span // lanes // vectors)
            # Prefer: enough rows, whole cache lines of weights, few FMA issue slots
            # (``_FMA_CHAINS``: on AVX2, 6x2 over 4x2 for 28 or 56 rows, 5x2 for 14, 4x2
            # for 7), exact split, big area, then few loads per FMA (r broadcasts +
            # ``vectors`` weight loads feed r x vectors FMAs: 7x2 needs 9 loads for 14
            # FMAs, 14x1 needs 15; on AVX-512 one vector is already a whole line, so area
            # ties were common: interleaved A/B on a 2-core Zen 5, one thread, MiniLM
            # 0.63x, ResNet-50 0.91x, EfficientNet-Lite0 0.92x, DenseNet-121 0.93x, VGG-19
            # 0.94x, other light models 0.98-1.00x), then few vectors. (Ranking waste by
            # rows alone, not rows x vectors, gave SqueezeNet's stem 8x2 instead of 16x1,
            # 0.63x, but ZFNet's 11x2 instead of 11x1, 1.44x: left to the tuner.)
            loads = Fraction(r + vectors, r * vectors)
            reuse = min(r, _MIN_ROWS, rows)
            if narrow and loads <= full_loads and r * vectors >= _FMA_CHAINS:
                reuse = min(_MIN_ROWS, rows)
            score = (
                reuse,
                line,
                -cycles,
                exact,
                -waste * vectors,
                area,
                -loads,
                -vectors,
            )
            if best is None or score > best[0]:
                best = (score, Tile(rows=r, vectors=vectors, lanes=lanes))
    return best[1] if best else None


def _tile_cycles(rows: int, tile_rows: int, vectors: int) -> int:
    """FMA issue slots per reduction step to cover ``rows`` rows with ``tile_rows x
    vectors`` tiles: a tile of ``a`` accumulators takes ``max(a, _FMA_CHAINS)`` (fewer
    independent chains leave the pipes waiting on latency); the partial last tile counts
    at its own size."""
    full, tail = divmod(rows, tile_rows)
    cost = full * max(tile_rows * vectors, _FMA_CHAINS)
    return cost + (max(tail * vectors, _FMA_CHAINS) if tail else 0)


# Weight bytes of a block of panels (``panel_block_default``); 0: no blocks, the default.
# 128 KiB took ResNet-50's 14x14 256 -> 1024 expand conv from 0.90x to 0.78x of the
# unchunked time in the model (7x7 512 -> 2048: 0.89x to 0.83x) but the whole model only
# to 0.98x of the chunked build, Inception v2 1.01x, DenseNet-121 1.00x (one thread,
# paired, 2-core Zen 3 under load): within noise, so left to the tuner.
PANEL_BLOCK_BYTES = 0


def panel_block_default(con: Contraction, width: int) -> int:
    """Vector tiles (panels of ``width`` output channels) per block of the tile loop
    order ``panel block, rows, panel in block``: the most whose weights fit in
    ``PANEL_BLOCK_BYTES``."""
    if not PANEL_BLOCK_BYTES:
        return 1
    depth = math.prod(con.extent(k) for k in con.reduce)
    panel = depth * width * con.dtype_bits // 8
    total = con.extent(con.vec) // width
    best = 1
    for b in _divisors(total):
        if b * panel <= PANEL_BLOCK_BYTES:
            best = b
    return best


def pad_in_tile_default(sch: s_tir.Schedule, con: Contraction, pad: SBlockRV) -> bool:
    """The default of ``Knobs.pad_in_tile`` for ``con`` reading the output of ``pad``:
    only for a strided conv without a channel reduction (a stride-2 depthwise conv).

    Inside the tile, each tile copies the padded rows it reads, so overlapping windows
    copy an input row more than once (3x3 stride 1: three times). A stride-2 depthwise
    conv reads a padded copy 4x the size of its output, made and read back through
    memory: per kernel, interleaved, EfficientNet-Lite0's 112x112x96 one took 0.55-0.75x
    the time in the tile. A stride-1 depthwise conv (9 multiply-adds per output) took
    1.1-1.3x, a 3-channel stem (a scalar copy) 1.5x, and ResNet-50's 3x3 convs (the copy
    ~1/100 of the multiply-adds) measured 0.93x to 1.07x on the whole model in three
    runs, no clear gain: those keep the padded copy unless the tuner picks otherwise.
    """
    block = sch.get(con.info.block_rv)
    out = sch.get(pad).writes[0].source
    reads = [r for r in block.reads if r.source.same_as(out)]
    if len(reads) != 1 or con.row is None:
        return False
    index = [r.min for r in reads[0].region]
    channel = [k for k in con.reduce if uses(index[-1], con.info.iters[k].var)]
    if any(con.extent(k) > 1 for k in channel):  # not depthwise
        return False
    stride = var_coefficient(index[-2], con.info.iters[con.row].var) if len(index) > 1 else None
    return stride is not None and stride > 1


def schedule_contraction(
    sch: s_tir.Schedule,
    con: Contraction,
    epilogue: SBlockInfo | None,
    cpu: CpuInfo,
    knobs: Knobs | None = None,
    pads: Sequence[SBlockRV] = (),
) -> list[SBlockRV] | None:
    """Schedule ``con`` (and its elementwise ``epilogue``) in place; returns the blocks of
    ``pads`` (zero-padding producers of its input) it did not compute inside the tile,
    for the caller to schedule; None (nothing changed) if ``con`` has no vector tile.

    ``knobs`` (tuning only) replaces the fixed choices by the tuner's decisions."""
    knobs = knobs or Knobs()
    rows = con.extent(con.row) if con.row is not None else 1
    tile = choose_tile(rows, con.extent(con.vec), cpu, con.dtype_bits, con.group)
    if tile is None:
        return None
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
    # Panels per block: only with a constant tile width (not a tuner's sampled one).
    per_block = knobs.panel_block
    panels = con.extent(con.vec) // (n_vectors * tile.lanes) if isinstance(n_vectors, int) else 0
    if per_block is None and panels:
        per_block = panel_block_default(con, n_vectors * tile.lanes)
    if knobs.rows_outside:
        outer = [loops[k] for k in con.weight_batch] + spatial + rows_outer + [v_outer]
    elif per_block and 1 < per_block < panels and panels % per_block == 0:
        v_blocks, v_block = sch.split(v_outer, [None, per_block])
        outer = [loops[k] for k in con.weight_batch] + [v_blocks] + spatial + rows_outer
        outer.append(v_block)
    else:
        outer = [loops[k] for k in con.weight_batch] + [v_outer] + spatial + rows_outer
    reduce = [loops[k] for k in con.reduce]
    sch.reorder(*outer, *reduce, *rows_inner, v_vec, v_lane)

    tile_loop = outer[-1]
    left = []
    for pad in pads:
        in_tile = knobs.pad_in_tile
        if in_tile is None:
            in_tile = pad_in_tile_default(sch, con, pad)
        if not (in_tile and _pad_in_tile(sch, pad, tile_loop, tile.lanes)):
            left.append(pad)
    writer = write_tile_from_registers(
        sch, block, epilogue.block_rv if epilogue else None, tile_loop
    )
    # Annotate and parallelize before decomposing: afterwards the update block has no
    # init, and the vectorize/parallel checks no longer accept it as a reduction block.
    for loop in rows_inner:
        sch.unroll(loop)
    sch.unroll(v_vec)
    sch.vectorize(v_lane)
    unroll_and_vectorize(sch, sch.get_loops(writer)[len(outer) :], tile.lanes)
    parallel = _macs(con) >= PARALLEL_MIN_MACS if knobs.parallel is None else knobs.parallel
    # The innermost tile loops stay serial inside each parallel iteration: the register
    # tile's buffer is allocated once per iteration (module docstring).
    keep = fuse_tile_loops(sch, outer, cpu.cores, parallel)
    if reduce:
        init = sch.decompose_reduction(block, reduce[0])
        unroll_and_vectorize(sch, sch.get_loops(init)[1 + keep :], tile.lanes)
    logger.debug("contraction %s: tile %s", con.info.name, tile)
    return left


# Parallel iterations per core the tile loops must keep; the innermost tile loops
# beyond that run serially inside each. 0: every tile is one parallel iteration.
PARALLEL_CHUNKS_PER_CORE = 4
# At most this fraction of a core idle at the join from a parallel extent the cores do
# not divide (21 iterations on 2 cores: 11 + 10, 1/21 lost).
_MAX_IMBALANCE = Fraction(1, 32)


def serial_tile_loops(extents: Sequence[int], cores: int) -> int:
    """How many of the innermost tile loops (of ``extents``, outermost first) to leave
    out of the parallel loop: the most that leave at least ``PARALLEL_CHUNKS_PER_CORE x
    cores`` parallel iterations shared evenly enough (``_MAX_IMBALANCE``) among ``cores``;
    at least one loop stays parallel. Module docstring: the register tile's buffer is
    allocated once per parallel iteration."""
    best = 0
    for keep in range(1, len(extents)):
        head = math.prod(extents[: len(extents) - keep])
        idle = Fraction(-(-head // cores) * cores - head, head)
        if head >= PARALLEL_CHUNKS_PER_CORE * cores and idle <= _MAX_IMBALANCE:
            best = keep
    return best if PARALLEL_CHUNKS_PER_CORE else 0


def fuse_tile_loops(sch: s_tir.Schedule, tiles: list[LoopRV], cores: int, parallel: bool) -> int:
    """Fuse the ``tiles`` loops (outermost first); returns how many of the innermost stay
    serial below the fused loop. Serial (``parallel`` false or one core): all of them
    fused, 0. Parallel: the outer ones fused into one parallel loop, the innermost
    ``serial_tile_loops`` serial inside it (0 where an extent is not static). Shared by
    the contraction, depthwise and int8 rules: each allocates its register tile's buffer
    once per parallel iteration (module docstring)."""
    if not parallel or cores < 2:
        if len(tiles) > 1:
            sch.fuse(*tiles)
        return 0
    extents = [sch.get(loop).extent for loop in tiles]
    static = all(isinstance(e, tirx.IntImm) for e in extents)
    keep = serial_tile_loops([int(e) for e in extents], cores) if static else 0
    head = tiles[: len(tiles) - keep]
    sch.parallel(sch.fuse(*head) if len(head) > 1 else head[0])
    return keep


def _pad_in_tile(sch: s_tir.Schedule, pad: SBlockRV, tile_loop: LoopRV, lanes: int) -> bool:
    """Compute ``pad`` inside ``tile_loop``: each tile writes the padded input rows it
    reads into a small buffer that stays in L1, instead of the kernel writing and reading
    back a padded copy of its whole input (a depthwise conv's traffic tripled). False,
    ``sch`` unchanged, where TVM cannot place it there."""
    try:
        sch.compute_at(pad, tile_loop, preserve_unit_loops=True)
    except s_tir.ScheduleError:
        return False
    vector_split(sch, sch.get_loops(pad)[-1], lanes)
    return True
