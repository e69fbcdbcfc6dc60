"""Row-wise reductions (softmax, layer norm, mean over the last axis) without recomputation.

The row rule (``schedule_rows``) runs every stage of a row under one loop over the rows,
vectorized: reductions on SIMD partial sums (``rfactor.py``), elementwise stages on
vectors; the row loop is parallel when there is enough work::

    parallel for row:
        rf[0:16] = 0;  for ko: rf[0:16] += x[row, ko*16 : ko*16+16];  sum = reduce(rf)
        ...                                   # variance / exp-sum likewise
        for j0: y[row, j0*16 : j0*16+16] = (x[row, ...] - mean) * rstd * scale + bias

It replaces dlight's CPU ``Reduction`` rule, which parallelizes the *last* block's leading
spatial loops and assumes those are the rows. On a single row (``[1, N]``) normalization
drops the unit axes, that loop is the N columns, and every reduction was recomputed once
per output element (O(N^2), with the shared accumulators racing across threads). Here the
row loop is found by its extent, and a schedule in which any block runs more often than
its iteration domain is rejected (``preserves_work``). A single row has no row loop: such
functions go to the generic path, which vectorizes the reductions at root the same way.
"""

from __future__ import annotations

import logging
import math

from tvm import s_tir
from tvm.s_tir.dlight.analysis import SBlockInfo, normalize_prim_func
from tvm.s_tir.schedule import LoopRV, SBlockRV

from .analysis import const_extents
from .loops import PARALLEL_MIN_ELEMS, extent, vector_split
from .reduction import vector_axis, vector_lanes
from .rfactor import rfactor_candidate, split_rfactor, vectorize_rfactor

logger = logging.getLogger(__name__)


def loop_volume(sch: s_tir.Schedule, block: SBlockRV) -> int | None:
    """How many times ``block`` runs: the product of its enclosing loops' extents."""
    total = 1
    for loop in sch.get_loops(block):
        ext = extent(sch, loop)
        if ext is None:
            return None
        total *= ext
    return total


def domain_volume(sch: s_tir.Schedule, block: SBlockRV) -> int | None:
    """The size of ``block``'s iteration domain."""
    total = 1
    for iv in sch.get(block).iter_vars:
        ext = iv.dom.extent
        if not hasattr(ext, "value"):
            return None
        total *= int(ext.value)
    return total


def preserves_work(sch: s_tir.Schedule) -> bool:
    """Whether every block runs exactly once per point of its iteration domain (a
    ``compute_at`` under the wrong loop multiplies it)."""
    for block in sch.get_child_blocks(sch.get_sblock("root")):
        volume = domain_volume(sch, block)
        if volume is None or loop_volume(sch, block) != volume:
            return False
    return True


def _row_count(infos: list[SBlockInfo]) -> int | None:
    """Rows of a row-wise function: the output size shared by all its reductions."""
    rows = {
        math.prod(int(it.dom) for it in info.iters if it.kind == "S")
        for info in infos
        if not info.is_injective()
    }
    return rows.pop() if len(rows) == 1 else None


def _row_loop(sch: s_tir.Schedule, last: SBlockInfo, rows: int) -> LoopRV | None:
    """The leading loops of the last block that span exactly ``rows``, fused."""
    loops = sch.get_loops(last.block_rv)
    size = 1
    for k, loop in enumerate(loops):
        size *= extent(sch, loop) or 0
        if size == rows:
            return sch.fuse(*loops[: k + 1]) if k else loops[0]
        if size > rows or size == 0:
            return None
    return None


def _applies(infos: list[SBlockInfo] | None) -> bool:
    """Several static blocks, some reduction, ending in an elementwise one, each with a
    leading spatial (row) axis: softmax, layer / RMS norm, mean + divide."""
    if infos is None or len(infos) < 2 or not all(const_extents(i) for i in infos):
        return False
    if all(i.is_injective() for i in infos) or not infos[-1].is_injective():
        return False
    return all(i.dom_kind().startswith("S") for i in infos)


def _reduces_across_rows(sch: s_tir.Schedule, infos: list[SBlockInfo], lanes: int) -> bool:
    """Whether a reduction's output axis is the contiguous one of its input (NHWC ``mean``
    over H and W): its "rows" are whole vectors of channels, reduced at a stride. The
    generic path's spatial vector reduction accumulates those vectors; the row rule ran one
    strided scalar sum per channel (SqueezeNet's global pool, 13x13x1000, ~7x slower)."""
    for info in infos:
        if info.is_injective():
            continue
        vec = vector_axis(sch, info)
        if vec is not None and vector_lanes(int(info.iters[vec].dom), lanes) is not None:
            return True
    return False


def schedule_rows(func: s_tir.PrimFunc, lanes: int, cores: int) -> s_tir.Schedule | None:
    """The row rule on ``func``, or None where it does not apply or has a single row."""
    sch = s_tir.Schedule(func)
    infos = normalize_prim_func(sch)
    if not _applies(infos) or _reduces_across_rows(sch, infos, lanes):
        return None
    rows = _row_count(infos)
    if rows is None or rows <= 1:
        return None
    try:
        return _schedule_rows(sch, infos, rows, lanes, cores)
    except (RuntimeError, ValueError) as err:  # TVM's ScheduleError: the generic path runs
        logger.debug("row rule failed for %s: %s", infos[-1].name, str(err).splitlines()[0])
        return None


def _schedule_rows(
    sch: s_tir.Schedule, infos: list[SBlockInfo], rows: int, lanes: int, cores: int
) -> s_tir.Schedule | None:
    last = infos[-1]
    row = _row_loop(sch, last, rows)
    if row is None:
        return None
    last_loops = sch.get_loops(last.block_rv)
    if not sch.get(last_loops[-1]).same_as(sch.get(row)):  # columns inside the row loop
        vector_split(sch, last_loops[-1], lanes)
    partials = set()
    for info in infos[:-1]:
        rf = split_rfactor(sch, info, lanes) if rfactor_candidate(sch, info, lanes) else None
        if rf is not None:
            partials.add(sch.get(rf).name_hint)
    stages = sch.get_child_blocks(sch.get_sblock("root"))[:-1]
    for block in reversed(stages):
        sch.compute_at(block, row, preserve_unit_loops=True)
    if not preserves_work(sch):
        logger.debug("row rule rejected for %s: a block would be recomputed", last.name)
        return None
    # Before the partial sums' init is split off: ``parallel`` wants whole reduction blocks.
    work = max(math.prod(int(it.dom) for it in info.iters) for info in infos)
    if cores > 1 and work >= PARALLEL_MIN_ELEMS:
        sch.parallel(row)
    for block in stages:
        _vectorize_stage(sch, block, partials, lanes)
    return sch


def _vectorize_stage(sch: s_tir.Schedule, block: SBlockRV, partials: set[str], lanes: int) -> None:
    """One stage under the row loop: partial sums on vectors, elementwise stages split into
    vectors, the rest (write-backs, reductions rfactor cannot take) left serial."""
    stmt = sch.get(block)
    if stmt.name_hint in partials:
        if not vectorize_rfactor(sch, block, lanes, below=1):
            raise ValueError(f"rfactor of {stmt.name_hint} has an unexpected loop nest")
        return
    loops = sch.get_loops(block)
    if stmt.init is None and len(loops) > 1:
        vector_split(sch, loops[-1], lanes)
