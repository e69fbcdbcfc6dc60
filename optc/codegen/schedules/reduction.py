"""Reductions whose output's innermost axis is contiguous in the input: pooling and
``mean``/``sum`` over spatial axes in NHWC. The reduction loops move outside that axis
so the accumulation runs on whole SIMD vectors::

    parallel for (n, y):  for x:  for (ky, kx):  out[n, y, x, c:c+16] max= in[...]
"""

from __future__ import annotations

from tvm import s_tir
from tvm.s_tir.dlight.analysis import SBlockInfo

from .analysis import const_extents, vector_access_ok
from .loops import extent, parallel_outer, unroll_and_vectorize

_MIN_LANES = 4


def vector_axis(sch: s_tir.Schedule, info: SBlockInfo) -> int | None:
    """Index of the spatial iterator that is the output's last index and contiguous (or
    absent) in every read, or None."""
    block = sch.get(info.block_rv)
    # A 0-d output (a reduction over the whole tensor) has no axis to vectorize.
    if len(block.writes) != 1 or not block.writes[0].region or not const_extents(info):
        return None
    last = block.writes[0].region[-1].min
    for k, it in enumerate(info.iters):
        if it.kind == "S" and last.same_as(it.var):
            ok, _ = vector_access_ok(block, it.var)
            return k if ok else None
    return None


def vector_lanes(ext: int, lanes: int) -> int | None:
    """Lanes for a vectorized axis of ``ext`` elements: ``lanes``, or narrower vectors
    where whole wide ones do not divide it (1000 channels on AVX-512: 8 lanes, not a
    scalar loop), or the whole short axis; None if none fits."""
    while lanes > _MIN_LANES and ext % lanes and ext > lanes:
        lanes //= 2
    if ext % lanes == 0 or (ext < lanes and ext % _MIN_LANES == 0):
        return lanes
    return None


def schedule_spatial_vector_reduction(
    sch: s_tir.Schedule, info: SBlockInfo, lanes: int, cores: int
) -> bool:
    """Reorder ``R`` loops outside the contiguous spatial axis and vectorize it."""
    vec = vector_axis(sch, info)
    if vec is None:
        return False
    ext = int(info.iters[vec].dom)
    narrowed = vector_lanes(ext, lanes)
    if narrowed is None:
        return False
    lanes = narrowed
    loops = [it.loop_rv for it in info.iters]
    spatial = [loops[k] for k, it in enumerate(info.iters) if it.kind == "S" and k != vec]
    reduce = [loops[k] for k, it in enumerate(info.iters) if it.kind == "R"]
    v_outer = None
    if ext > lanes:
        v_outer, v_inner = sch.split(loops[vec], [None, lanes])
    else:
        v_inner = loops[vec]
    outer = spatial + ([v_outer] if v_outer is not None else [])
    sch.reorder(*outer, *reduce, v_inner)
    sch.vectorize(v_inner)
    elems = 1
    for loop in outer:
        elems *= extent(sch, loop) or 1
    n_outer = parallel_outer(sch, outer, elems * lanes, cores)
    if reduce:
        init = sch.decompose_reduction(info.block_rv, reduce[0])
        unroll_and_vectorize(sch, sch.get_loops(init)[n_outer:], lanes)
    return True


def schedule_inner_reduction(sch: s_tir.Schedule, info: SBlockInfo, cores: int) -> None:
    """Generic reduction at root: parallel over spatial loops, vectorize nothing unsafe."""
    loops = [it.loop_rv for it in info.iters]
    spatial = [loops[k] for k, it in enumerate(info.iters) if it.kind == "S"]
    elems = 1
    for loop in spatial:
        elems *= extent(sch, loop) or 1
    # Keep the reduction loops inside; the spatial loops already lead after normalization.
    parallel_outer(sch, spatial, elems * 64, cores)
