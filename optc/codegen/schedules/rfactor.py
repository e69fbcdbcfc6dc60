"""SIMD partial sums for a reduction over a contiguous innermost axis (``rfactor``)::

    for ko:  rf[s, 0:16] += x[s, ko*16 : ko*16+16]      # one vector accumulator
    out[s] = sum(rf[s, 0:16])                            # 16 scalar adds per row

Used at root by the generic path (``schedule_vector_rfactor``) and, per row, by the row
reduction rule (``rowreduce.py``: ``split_rfactor`` before its ``compute_at``,
``vectorize_rfactor`` after it, since ``compute_at`` regenerates the loops below it).
"""

from __future__ import annotations

import logging
import math

from tvm import s_tir, tirx
from tvm.s_tir.dlight.analysis import SBlockInfo
from tvm.s_tir.dlight.analysis.common_analysis import get_sblockrealize
from tvm.s_tir.schedule import LoopRV, SBlockRV

from .analysis import const_extents, vector_access_ok
from .loops import extent, parallel_outer

logger = logging.getLogger(__name__)


def rfactor_candidate(sch: s_tir.Schedule, info: SBlockInfo, lanes: int) -> bool:
    """A reduction with one innermost ``R`` axis, at least two vectors long and a whole
    number of them, read contiguously along it, writing one buffer."""
    block = sch.get(info.block_rv)
    kinds = info.dom_kind()
    if len(block.writes) != 1 or not const_extents(info) or kinds.count("R") != 1:
        return False
    if kinds[-1] != "R" or len(sch.get_loops(info.block_rv)) != len(info.iters):
        return False
    ext = int(info.iters[-1].dom)
    if ext % lanes or ext < 2 * lanes:
        return False
    ok, users = vector_access_ok(block, info.iters[-1].var)
    return ok and bool(users)


def split_rfactor(sch: s_tir.Schedule, info: SBlockInfo, lanes: int) -> SBlockRV | None:
    """``rfactor`` the innermost reduction loop of ``info`` by ``lanes``: the new block
    accumulates ``lanes`` partial results per row (its last buffer axis), ``info``'s block
    then sums them. None (the split undone) when TVM knows no reducer for the update."""
    loops = sch.get_loops(info.block_rv)
    ndim = len(sch.get(info.block_rv).writes[0].region)
    ko, ki = sch.split(loops[-1], [None, lanes])
    try:
        return sch.rfactor(ki, factor_axis=ndim)
    except (RuntimeError, ValueError) as err:  # TVM's ScheduleError: not sum/max/min/...
        logger.debug("no rfactor for %s: %s", info.name, str(err).splitlines()[0])
        sch.fuse(ko, ki)
        return None


def _reduce_loop(sch: s_tir.Schedule, rf: SBlockRV, loops: list[LoopRV]) -> LoopRV | None:
    """The loop of ``loops`` bound to the ``rf`` block's reduction iterator."""
    block = sch.get(rf)
    realize = get_sblockrealize(sch, rf)
    for iv, value in zip(block.iter_vars, realize.iter_values, strict=True):
        if iv.iter_type != tirx.IterVar.CommReduce:
            continue
        used = tirx.analysis.undefined_vars(value)
        for loop in loops:
            if any(v.same_as(sch.get(loop).loop_var) for v in used):
                return loop
    return None


def vectorize_rfactor(sch: s_tir.Schedule, rf: SBlockRV, lanes: int, below: int = 0) -> bool:
    """Put the ``rf`` block's lane loop innermost and vectorize it; hoist its zero init.
    ``below``: how many outer loops (a row loop it was computed at) to leave alone.
    False (nothing changed) on a loop nest it does not know."""
    loops = sch.get_loops(rf)[below:]
    r_outer = _reduce_loop(sch, rf, loops)
    vec = [lp for lp in loops if extent(sch, lp) == lanes and not lp.same_as(r_outer)]
    if r_outer is None or not vec:
        return False
    lane = vec[-1]
    others = [lp for lp in loops if not lp.same_as(r_outer) and not lp.same_as(lane)]
    sch.reorder(*others, r_outer, lane)
    sch.vectorize(lane)
    init = sch.decompose_reduction(rf, r_outer)
    sch.vectorize(sch.get_loops(init)[-1])
    return True


def schedule_vector_rfactor(
    sch: s_tir.Schedule, info: SBlockInfo, lanes: int, cores: int
) -> bool:
    """A reduction block at root on vector partial sums, parallel over its rows when there
    is enough work. False (``sch`` untouched) when it does not have that form.

    A single row stays on one core: slicing it across threads (one vector of partial sums
    per thread) measured slower than one core's vector loop up to 262144 floats (0.022 vs
    0.014 ms for a mean, 2-core EPYC), the loop being shorter than a parallel launch.
    """
    if not rfactor_candidate(sch, info, lanes):
        return False
    rf = split_rfactor(sch, info, lanes)
    if rf is None:
        return False
    spatial = sch.get_loops(rf)[:-2]  # rows, then the reduction and lane loops
    rows = math.prod(extent(sch, lp) or 1 for lp in spatial)
    # Parallel over rows only, and before the init is split off: ``parallel`` wants whole
    # reduction blocks.
    below = parallel_outer(sch, spatial, rows * int(info.iters[-1].dom) if rows > 1 else 0,
                           cores)
    if not vectorize_rfactor(sch, rf, lanes, below=below):
        raise ValueError(f"rfactor of {info.name} has an unexpected loop nest")
    # The write-back (``lanes`` scalar adds per row) has its own loop nest.
    parallel_outer(sch, sch.get_loops(info.block_rv)[:-1], rows * lanes, cores)
    return True
