"""Small loop-level helpers shared by the rules: vectorize the inner axis, parallelize the
outer ones, and the injective (elementwise / layout / pad) schedule built from them."""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.s_tir.schedule import LoopRV, SBlockRV

# Below this many output elements a parallel launch (about a microsecond per call on
# the TVM thread pool) costs more than the loop itself.
PARALLEL_MIN_ELEMS = 1 << 14


def extent(sch: s_tir.Schedule, loop: LoopRV) -> int | None:
    """Static extent of ``loop`` or None."""
    ext = sch.get(loop).extent
    return int(ext) if isinstance(ext, tirx.IntImm) else None


def unroll_and_vectorize(sch: s_tir.Schedule, loops: list[LoopRV], lanes: int) -> None:
    """Vectorize the innermost of ``loops`` by ``lanes`` and unroll the others (a small tile)."""
    if not loops:
        return
    inner = loops[-1]
    ext = extent(sch, inner)
    if ext is not None and ext > lanes and ext % lanes == 0:
        rest, inner = sch.split(inner, [None, lanes])
        sch.unroll(rest)
    if ext is not None and ext > 1 and (ext % lanes == 0 or ext < lanes):
        sch.vectorize(inner)
    for loop in loops[:-1]:
        sch.unroll(loop)


def vector_split(sch: s_tir.Schedule, loop: LoopRV, lanes: int) -> LoopRV | None:
    """Split ``loop`` so that its inner part is one SIMD vector; vectorize it.

    Returns the remaining outer loop, or None when the extent does not allow it (a
    tail would make TIR fall back to scalar code anyway).
    """
    ext = extent(sch, loop)
    if ext is None or ext < 2:
        return loop
    if ext % lanes == 0:
        outer, inner = sch.split(loop, [None, lanes])
        sch.vectorize(inner)
        return outer
    if ext < lanes and ext % 4 == 0:
        sch.vectorize(loop)
        return None
    return loop


def parallel_outer(sch: s_tir.Schedule, loops: list[LoopRV], elems: int, cores: int) -> int:
    """Fuse ``loops`` and mark them parallel when the work is worth a thread launch.

    Returns how many loops now stand where ``loops`` stood (1 if fused).
    """
    if not loops or cores < 2 or elems < PARALLEL_MIN_ELEMS:
        return len(loops)
    fused = sch.fuse(*loops) if len(loops) > 1 else loops[0]
    sch.parallel(fused)
    return 1


def schedule_injective(sch: s_tir.Schedule, block: SBlockRV, lanes: int, cores: int) -> None:
    """Vectorize the innermost axis and parallelize the rest of a spatial block at root."""
    loops = sch.get_loops(block)
    if not loops:
        return
    elems = 1
    for loop in loops:
        elems *= extent(sch, loop) or PARALLEL_MIN_ELEMS
    inner = loops[-1]
    # Fuse a short innermost axis with its parent so that the vector is filled, when the
    # pair is contiguous in the written buffer (the common NHWC case with few channels).
    ext = extent(sch, inner)
    if ext is not None and ext % lanes and len(loops) > 1 and _contiguous_pair(sch, block):
        parent = extent(sch, loops[-2])
        if parent is not None and (ext * parent) % lanes == 0:
            inner = sch.fuse(loops[-2], inner)
            loops = [*loops[:-2], inner]
    rest = vector_split(sch, inner, lanes)
    outer = [*loops[:-1], rest] if rest is not None else loops[:-1]
    parallel_outer(sch, [lp for lp in outer if lp is not None], elems, cores)


def _contiguous_pair(sch: s_tir.Schedule, block: SBlockRV) -> bool:
    """Whether every buffer access of ``block`` indexes its last two axes by the last two
    block iterators in order (so fusing the two loops keeps accesses contiguous)."""
    stmt = sch.get(block)
    if len(stmt.iter_vars) < 2:
        return False
    last2 = [iv.var for iv in stmt.iter_vars[-2:]]
    for region in [*stmt.reads, *stmt.writes]:
        idx = [r.min for r in region.region]
        if len(idx) < 2 or not (idx[-2].same_as(last2[0]) and idx[-1].same_as(last2[1])):
            return False
    return True
