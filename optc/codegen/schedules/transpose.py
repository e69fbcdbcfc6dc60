"""2-D blocked schedule for layout transposes (NHWC <-> NCHW), alone or with an
elementwise chain inlined into them.

The injective rule vectorizes the destination's innermost axis; in a transpose each
vector then gathers one element from each of ``lanes`` source rows, and the loops above
sweep the whole source once per destination channel: NHWC -> NCHW of VGG's 224x224x64
stem output (12.8 MB) re-read every source cache line 16 times and took longer than the
conv itself. Here both innermost axes, the destination's and the source's, are split
into blocks (``lanes`` x ``lanes`` where the extents allow) and the block loops sit
innermost: a tile reads whole source cache lines and writes whole destination ones, and
its strided side (a gather or scatter) stays within L1. The source-contiguous block loop
runs inside the destination one, so that the source streams in order. A destination row
too short for a vector (NCHW -> NHWC of a 3-channel image) vectorizes the source row
instead, one load per channel, and leaves the scatter to the tile.
"""

from __future__ import annotations

from dataclasses import dataclass

import tvm
from tvm import ir, s_tir, tirx
from tvm.s_tir.schedule import SBlockRV

from .loops import PARALLEL_MIN_ELEMS, expr_children, extent, parallel_prefix

# Narrower blocks than this do not fill a vector worth the tiling.
_MIN_BLOCK = 4


@dataclass(frozen=True)
class Permutation:
    """A block whose destination innermost axis (its last iterator) is not the innermost
    axis of its main source: ``src_axis`` is the iterator that indexes the source's last
    axis."""

    src_axis: int
    extents: tuple[int, ...]


def _iter_of(index: ir.expr.Expr, ivars: list[tirx.Var]) -> int | None:
    """Position of the iterator ``index`` is (``v`` or ``v +- constant``), else None."""
    if isinstance(index, (tirx.Add, tirx.Sub)) and isinstance(index.b, tirx.IntImm):
        index = index.a
    for pos, var in enumerate(ivars):
        if index.same_as(var):
            return pos
    return None


def _loads(node: object, found: list[tvm.ir.TensorLoad]) -> None:
    """Append the buffer loads of the expression ``node`` to ``found``."""
    if isinstance(node, tvm.ir.TensorLoad):
        found.append(node)
        return
    for child in expr_children(node):
        _loads(child, found)


def as_permutation(sch: s_tir.Schedule, block: SBlockRV) -> Permutation | None:
    """``block`` as a permutation of a source whose innermost axis differs from the
    destination's, else None. The block must write its buffer at its iterators in order
    (constants for unit axes; a spatial block at root) with static extents; of its
    loads, the largest one with at least two axes whose last index is another iterator
    (``v`` or ``v +- c``, a pad inlined) and which also reads the destination's
    innermost iterator decides."""
    stmt = sch.get(block)
    store = stmt.body
    ivars = [iv.var for iv in stmt.iter_vars]
    if len(ivars) < 2 or not isinstance(store, tirx.BufferStore):
        return None
    if any(iv.iter_type != tirx.IterVar.DataPar for iv in stmt.iter_vars):
        return None
    # Unit axes are constant indices once the loops are normalized.
    written = [idx for idx in store.indices if not isinstance(idx, tirx.IntImm)]
    if not store.indices[-1].same_as(ivars[-1]) or len(written) != len(ivars):
        return None
    if not all(idx.same_as(var) for idx, var in zip(written, ivars, strict=True)):
        return None
    extents = [iv.dom.extent for iv in stmt.iter_vars]
    if not all(isinstance(e, tirx.IntImm) for e in extents):
        return None
    loads: list[tvm.ir.TensorLoad] = []
    _loads(store.value, loads)
    last = len(ivars) - 1
    best: tuple[int, int] | None = None  # (elements, source axis)
    for load in loads:
        if len(load.indices) < 2:
            continue
        src = _iter_of(load.indices[-1], ivars)
        if src is None or src == last:
            continue
        if not any(_iter_of(idx, ivars) == last for idx in load.indices[:-1]):
            continue
        size = 1
        for dim in load.source.shape:
            size *= int(dim) if isinstance(dim, tirx.IntImm) else PARALLEL_MIN_ELEMS
        if best is None or size > best[0]:
            best = (size, src)
    if best is None:
        return None
    return Permutation(best[1], tuple(int(e) for e in extents))


def _block(ext: int, lanes: int) -> int:
    """The block along an axis of ``ext``: the widest of ``lanes``, ``lanes / 2`` ... down
    to ``_MIN_BLOCK`` that divides it, the whole axis if shorter than ``lanes``, else
    ``lanes`` with a partial last block."""
    width = lanes
    while width >= _MIN_BLOCK:
        if ext % width == 0:
            return width
        width //= 2
    return min(ext, lanes)


def schedule_transpose(sch: s_tir.Schedule, block: SBlockRV, lanes: int, cores: int) -> bool:
    """Schedule ``block`` as a blocked transpose where it is one (``as_permutation``) and
    the source's innermost axis takes a block of at least ``_MIN_BLOCK`` (a whole number
    of them where the destination row is narrower); True when done, False with ``sch``
    unchanged otherwise."""
    perm = as_permutation(sch, block)
    if perm is None:
        return False
    loops = sch.get_loops(block)
    last = len(loops) - 1
    if len(loops) != len(perm.extents) or any(extent(sch, lp) is None for lp in loops):
        return False
    dst_ext, src_ext = perm.extents[last], perm.extents[perm.src_axis]
    dst_block, src_block = _block(dst_ext, lanes), _block(src_ext, lanes)
    narrow = dst_block < _MIN_BLOCK
    # A narrow destination row vectorizes the source row: only whole vectors.
    if src_block < _MIN_BLOCK or (narrow and src_ext % src_block):
        return False
    elems = 1
    for ext in perm.extents:
        elems *= ext
    src_outer, src_inner = sch.split(loops[perm.src_axis], [None, src_block])
    others = [lp for i, lp in enumerate(loops) if i not in (perm.src_axis, last)]
    if narrow:
        # A 3-channel destination row (NCHW -> NHWC of an image): one vector load per
        # channel from each source row, stored at a stride of 3 within the tile's lines.
        sch.reorder(*others, src_outer, loops[last], src_inner)
        sch.vectorize(src_inner)
        sch.unroll(loops[last])
        parallel_prefix(sch, [*others, src_outer], elems, cores)
        return True
    dst_outer, dst_inner = sch.split(loops[last], [None, dst_block])
    sch.reorder(*others, dst_outer, src_outer, src_inner, dst_inner)
    # The destination row of a tile is one vector (its store contiguous); the source
    # rows are unrolled so that each lane's load is a constant offset in the tile.
    if dst_ext % dst_block == 0:  # else predicated: TVM would scalarize the vector anyway
        sch.vectorize(dst_inner)
    sch.unroll(src_inner)
    parallel_prefix(sch, [*others, dst_outer, src_outer], elems, cores)
    return True
