"""Depthwise conv2d (NHWC, one filter per channel): channel vectors, output-pixel strips.

A depthwise conv ``O[n, y, x, c] += I[n, y*s + ky - p, x*s + kx - p, c] * W[ky, kx, 0, c]``
does 9 or 25 multiply-adds per output, each on its own input: there is no reduction over
channels for the contraction schedule (``contraction.py``) to block, and it ran
EfficientNet-Lite0's depthwise convs at 6-19 % of peak. The loop nest here::

    parallel for (n, c_outer, ...):                   # fused: >= 4 iterations per core
      for (..., y_outer):                             # serial: the rest of the row bands
        for y_inner, x_outer:                         # one strip of ``pixels`` outputs
            acc[pixels, vectors * lanes] = 0          # local: lives in registers
            for ky, kx (unrolled):
                for pixel, vector (unrolled):
                    for lane (vectorized):
                        acc += pad(I)[y*s + ky, x*s + kx, c] * W[ky, kx, c]
            O[..] = epilogue(acc)                     # bias + ReLU6 fused, vectorized

- Channels are the vector axis: input, weights and output are all contiguous along them,
  so every multiply-add is one full-vector FMA (no broadcast, no gather).
- A strip of output pixels of one row shares its weights (LLVM hoists them out of the
  strip loop) and, with ky / kx unrolled, loads each input vector once for all the
  outputs of the strip that use it (3x3 stride 1, 8 pixels: 30 loads for 72 FMAs).
- The zero padding is inlined into the conv (an ``if_then_else`` on the input read; LLVM
  branches around the loads of the border taps): no padded copy of the input at all.
- Channel blocks outermost: a block's weights stay in L1 over all its rows.

Measured on the shared 2-vCPU Zen 3 under load (other jobs running; one thread, thread
CPU time, variants interleaved, min of 15-21 rounds; EfficientNet-Lite0's 12 depthwise
convs unless said):

- a padded copy made inside each tile instead (the contraction schedule's stride-2
  rule) took 1.0-1.8x the time of the inlined pad, 1.2x typical (0.96x on one, the
  14x14x672 5x5, whose border taps are a larger share);
- 2 vectors (16 channels, a whole 64-byte line per pixel) x 4 pixels where the input is
  >= 1 MiB (it does not stay in L2 between the two halves of its lines): 0.64x
  (112x112x96 stride 2), 0.75x (112x112x32), 1.0x (56x56x144) the time of 1 x 8; on
  the 28x28 and smaller maps 1 vector x 7 pixels took 0.28-0.81x the time of 2 x 4 or
  2 x 2;
- strip widths divide the output width: 8 pixels on a 28-wide map (a tail predicate)
  took 1.3-1.8x the time of 7;
- channel blocks outside row bands vs inside: 0.9-1.05x, within the noise; kept for the
  weights' reuse (cold caches: 0.9-1.0x on 6 of 8 kernels).

Against the contraction schedule, same conditions (median of 21 rounds): the 12 kernels
0.32-0.78x the time, 0.54x in all; ShuffleNet's 6 (3x3, 112-544 channels) 0.52x in all.
Whole EfficientNet-Lite0 (interleaved, under load): 0.74-0.87x the time with two
threads, 0.81x with one.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from tvm import s_tir
from tvm.s_tir.dlight.analysis import SBlockInfo

from .analysis import as_contraction, uses, var_coefficient
from .contraction import PARALLEL_MIN_MACS, fuse_tile_loops
from .hw import CACHE_LINE_BYTES, CpuInfo
from .loops import unroll_and_vectorize, write_tile_from_registers

logger = logging.getLogger(__name__)

# Accumulators of a one-vector strip: 8 of the 16 AVX2 registers; the rest hold the
# input vectors and weights that the unrolled kx taps share.
_MAX_PIXELS = 8
# An input this large does not stay in L2 between the two halves of its cache lines:
# its tiles take whole lines (16 channels on AVX2) and ``_MAX_PIXELS / vectors`` pixels.
_WIDE_INPUT_BYTES = 1 << 20
_MIN_LANES = 4
# Output rows per parallel tile: enough work per tile, enough tiles to balance threads.
_MAX_ROWS = 4


@dataclass(frozen=True)
class Depthwise:
    """A depthwise conv block: the positions of its iterators in ``info.iters``."""

    info: SBlockInfo
    batch: tuple[int, ...]  # spatial axes other than the output row, column and channel
    row: int
    col: int
    channel: int
    reduce: tuple[int, ...]
    input_bytes: int

    def extent(self, index: int) -> int:
        return int(self.info.iters[index].dom)

    @property
    def macs(self) -> int:
        return math.prod(int(it.dom) for it in self.info.iters)


@dataclass(frozen=True)
class Plan:
    """``rows`` output rows per parallel tile; a register tile of ``pixels`` output
    columns by ``vectors`` SIMD vectors of ``lanes`` channels."""

    rows: int
    pixels: int
    vectors: int
    lanes: int


def as_depthwise(sch: s_tir.Schedule, info: SBlockInfo) -> Depthwise | None:
    """``info`` as a float32 depthwise conv2d in NHWC (``O[n, y, x, c] += I[n, y*sy + ky,
    x*sx + kx, c] * W[ky, kx, 0, c]``, channel multiplier 1), or None."""
    con = as_contraction(sch, info)
    if con is None or con.group or con.row is None or con.dtype_bits != 32:
        return None
    block = sch.get(info.block_rv)
    if len(block.writes[0].region) != 4 or any(r.source.dtype != "float32" for r in block.reads):
        return None
    iters = info.iters
    channel, col = iters[con.vec].var, iters[con.row].var
    images = [r for r in block.reads if len(r.region) == 4 and uses(r.region[2].min, col)]
    if len(images) != 1:
        return None
    index = [r.min for r in images[0].region]
    # Input channel = output channel: any reduction axis in it is a unit one (the
    # group's single input channel); a contraction over channels is not depthwise.
    if var_coefficient(index[3], channel) != 1:
        return None
    if any(con.extent(k) > 1 for k in con.reduce if uses(index[3], iters[k].var)):
        return None
    spatial = con.outer + con.weight_batch
    rows = [k for k in spatial if uses(index[1], iters[k].var)]
    if len(rows) != 1 or not var_coefficient(index[1], iters[rows[0]].var):
        return None
    if not var_coefficient(index[2], col):
        return None
    shape = [int(s) for s in images[0].source.shape]
    return Depthwise(
        info=info,
        batch=tuple(k for k in spatial if k != rows[0]),
        row=rows[0],
        col=con.row,
        channel=con.vec,
        reduce=con.reduce,
        input_bytes=math.prod(shape) * 4,
    )


def _largest_divisor(n: int, limit: int) -> int:
    return max(d for d in range(1, min(n, limit) + 1) if n % d == 0)


def choose_plan(dw: Depthwise, cpu: CpuInfo) -> Plan | None:
    """The tile for ``dw`` (see the module docstring), None if its channels are not a
    whole number of 4-lane vectors (left to the contraction schedule)."""
    lanes = cpu.lanes(32)
    channels = dw.extent(dw.channel)
    # Narrower vectors where the channels are no whole number of full ones (ShuffleNet's
    # 136 on AVX-512: 8 lanes); fewer than 4 lanes: left to the contraction schedule.
    while lanes > _MIN_LANES and channels % lanes:
        lanes //= 2
    if channels % lanes:
        return None
    width = dw.extent(dw.col)
    # Vectors that fill a cache line (AVX2: 2; AVX-512: one vector is a line already).
    line = max(1, CACHE_LINE_BYTES // (lanes * 4))
    vectors = line if dw.input_bytes >= _WIDE_INPUT_BYTES and channels % (line * lanes) == 0 else 1
    pixels = _largest_divisor(width, _MAX_PIXELS // vectors)
    rows = _largest_divisor(dw.extent(dw.row), _MAX_ROWS)
    return Plan(rows=rows, pixels=pixels, vectors=vectors, lanes=lanes)


def schedule_depthwise(
    sch: s_tir.Schedule, dw: Depthwise, plan: Plan, epilogue: SBlockInfo | None, cpu: CpuInfo
) -> None:
    """Schedule ``dw`` (its padding already inlined) and its elementwise ``epilogue``
    in place, as the module docstring's loop nest."""
    block = dw.info.block_rv
    loops = sch.get_loops(block)
    c_outer, c_vector, c_lane = sch.split(loops[dw.channel], [None, plan.vectors, plan.lanes])
    y_outer, y_inner = sch.split(loops[dw.row], [None, plan.rows])
    x_outer, x_inner = sch.split(loops[dw.col], [None, plan.pixels])
    batch = [loops[k] for k in dw.batch]
    reduce = [loops[k] for k in dw.reduce]
    sch.reorder(*batch, c_outer, y_outer, y_inner, x_outer, *reduce, x_inner, c_vector, c_lane)
    # The accumulator tile is what one strip writes: local scope keeps it in registers.
    writer = write_tile_from_registers(
        sch, block, epilogue.block_rv if epilogue else None, x_outer
    )
    strip = len(batch) + 4  # the loops down to x_outer
    # Annotate and parallelize before decomposing (see contraction.py).
    for loop in [*reduce, x_inner, c_vector]:
        sch.unroll(loop)
    sch.vectorize(c_lane)
    unroll_and_vectorize(sch, sch.get_loops(writer)[strip:], plan.lanes)
    tiles = [*batch, c_outer, y_outer]
    # The contraction schedule's rule (a thread launch costs a stall on a busy machine):
    # not re-measured for depthwise convs, whose multiply-adds are slower.
    # Only the outer tile loops run in parallel, the rest serially inside each parallel
    # iteration: TVM allocates the strip's accumulator buffer once per parallel iteration.
    keep = fuse_tile_loops(sch, tiles, cpu.cores, dw.macs >= PARALLEL_MIN_MACS)
    if reduce:
        init = sch.decompose_reduction(block, reduce[0])
        # The init's loops below the strip loop; the serial tile loops stay loops.
        below = strip - len(tiles) + 1 + keep
        unroll_and_vectorize(sch, sch.get_loops(init)[below:], plan.lanes)
    logger.debug("depthwise %s: %s", dw.info.name, plan)
