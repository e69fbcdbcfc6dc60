"""Small loop-level helpers shared by the rules: vectorize the inner axis, parallelize the
outer ones, and the injective (elementwise / layout / pad) schedule built from them."""

from __future__ import annotations

from tvm import ir, s_tir, tirx
from tvm.s_tir.schedule import LoopRV, SBlockRV

# Below this many output elements a parallel launch (about a microsecond per call on
# the TVM thread pool) costs more than the loop itself.
PARALLEL_MIN_ELEMS = 1 << 14
# Parallel chunks enough to balance two to a few cores under TVM's static split.
PARALLEL_MIN_CHUNKS = 64
# Narrower vectors than this do not pay for splitting an axis by its index period.
_MIN_NARROW_LANES = 4
_IF_THEN_ELSE = ir.Op.get("prim.if_then_else")
# The op of Relax ``round`` (ONNX QuantizeLinear's round half to even), in every requantize.
NEARBYINT = "tirx.nearbyint"


def vectorizable_nearbyint(enabled: bool = True, level: int = 10) -> None:
    """Let TVM's ``VectorizeLoop`` widen ``nearbyint`` (``enabled``; ``level``: TVM's
    registration level, a higher one overrides).

    TVM 0.27 marks ``round``, ``floor``, ``exp`` ... ``TVectorizable`` but not
    ``nearbyint``: a vectorized loop containing one is turned back into a scalar loop
    (``ax_s``), and LLVM's SLP vectorizer rebuilds vectors only where it can (one
    EfficientNet-Lite0 requantize epilogue: 16 of 48 outputs vectorized, the other 32
    a scalar ``vroundss`` / ``vcvttss2si`` / byte store each, Zen 3, two threads).
    LLVM lowers ``llvm.nearbyint`` on vectors to ``vroundps $12`` (round to nearest
    even under the default MXCSR, as ONNX's QuantizeLinear rounds); other backends
    get vector ``nearbyint`` calls as they get vector ``round`` and ``exp`` calls."""
    op = ir.Op.get(NEARBYINT)
    if bool(op.get_attr("TVectorizable")) != enabled:
        ir.register_op_attr(NEARBYINT, "TVectorizable", enabled, level=level)


vectorizable_nearbyint()


def expr_children(node: object) -> list[ir.expr.Expr]:
    """The operand expressions of a TIR expression node (binary ops, casts, selects,
    calls), for the walks over a block's store value."""
    children = [
        getattr(node, f, None)
        for f in ("a", "b", "value", "condition", "true_value", "false_value")
    ]
    children += list(getattr(node, "args", None) or [])
    return [child for child in children if isinstance(child, ir.expr.Expr)]


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


def write_tile_from_registers(
    sch: s_tir.Schedule, block: SBlockRV, epilogue: SBlockRV | None, at: LoopRV
) -> SBlockRV:
    """Keep ``block``'s output tile under ``at`` in local scope (registers) and write it
    out there: through the elementwise ``epilogue`` moved under ``at`` (bias, ReLU, the
    requantize), else through a cache-write copy. Returns the block that writes memory."""
    if epilogue is not None:
        sch.reverse_compute_at(epilogue, at, preserve_unit_loops=True)
        sch.set_scope(block, 0, "local")
        return epilogue
    writer = sch.cache_write(block, 0, "local")
    sch.reverse_compute_at(writer, at, preserve_unit_loops=True)
    return writer


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


def parallel_prefix(sch: s_tir.Schedule, loops: list[LoopRV], elems: int, cores: int) -> None:
    """Like ``parallel_outer``, but fuse only the leading loops that give enough parallel
    chunks: the loops below stay plain counters (fusing them all makes every element pay
    a div/mod of the fused index, which cost more than the copy in a 3-channel pad)."""
    if not loops or cores < 2 or elems < PARALLEL_MIN_ELEMS:
        return
    chunks, prefix = 1, []
    for loop in loops:
        prefix.append(loop)
        chunks *= extent(sch, loop) or PARALLEL_MIN_CHUNKS
        if chunks >= PARALLEL_MIN_CHUNKS:
            break
    parallel_outer(sch, prefix, elems, cores)


def schedule_injective(sch: s_tir.Schedule, block: SBlockRV, lanes: int, cores: int) -> None:
    """Vectorize the innermost axis and parallelize the rest of a spatial block at root."""
    loops = sch.get_loops(block)
    if not loops:
        return
    from .transpose import schedule_transpose  # imports this module

    if schedule_transpose(sch, block, lanes, cores):  # NHWC <-> NCHW: 2-D blocks
        return
    elems = 1
    for loop in loops:
        elems *= extent(sch, loop) or PARALLEL_MIN_ELEMS
    inner = loops[-1]
    period = _index_period(sch, block)
    narrow = lanes
    while period is not None and narrow > 1 and period % narrow:
        narrow //= 2
    if period is not None and narrow >= _MIN_NARROW_LANES:
        # Reads at ``c // K`` / ``c % K`` (a slice of padded groups, a channel shuffle):
        # split the axis by K so that those indices become plain loop variables, then
        # vectorize the part of K that whole vectors divide. Unsplit, a vector straddles
        # two groups and every lane computes its own div/mod and loads alone.
        _, inner = sch.split(inner, [None, period])
        _, vec = sch.split(inner, [None, narrow])
        sch.vectorize(vec)
        parallel_prefix(sch, sch.get_loops(block)[: len(loops) - 1], elems, cores)
        return
    if _split_at_selects(sch, block, loops, lanes, elems, cores):
        return
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
    parallel_prefix(sch, [lp for lp in outer if lp is not None], elems, cores)


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


def _index_period(sch: s_tir.Schedule, block: SBlockRV) -> int | None:
    """The smallest constant ``K`` of a ``c // K`` or ``c % K`` in the reads of ``block``,
    ``c`` being its innermost iterator, where ``K`` divides the extent of ``c``; else None."""
    stmt = sch.get(block)
    if not stmt.iter_vars:
        return None
    last = stmt.iter_vars[-1]
    ext = last.dom.extent
    if not isinstance(ext, tirx.IntImm):
        return None
    found: list[int] = []

    def visit(node: ir.expr.Expr) -> None:
        if (
            isinstance(node, (tirx.FloorDiv, tirx.FloorMod))
            and node.a.same_as(last.var)
            and isinstance(node.b, tirx.IntImm)
        ):
            found.append(int(node.b.value))
        for child in (
            getattr(node, "a", None),
            getattr(node, "b", None),
            getattr(node, "value", None),
        ):
            if isinstance(child, ir.expr.Expr):
                visit(child)

    for region in stmt.reads:
        for rng in region.region:
            visit(rng.min)
    periods = [k for k in found if 1 < k < int(ext) and int(ext) % k == 0]
    return min(periods) if periods else None


def _split_at_selects(
    sch: s_tir.Schedule, block: SBlockRV, loops: list[LoopRV], lanes: int, elems: int, cores: int
) -> bool:
    """A concatenation along the innermost axis (``if_then_else(288 <= c, b[c - 288],
    a[c])``, alone or inlined into a BN / ReLU after it): split that loop at the
    boundaries into one loop per input, each vectorized. Unsplit, every vector loads from
    every input and selects per lane (DenseNet's 58 concatenations, 2-3x the bytes of a
    copy); split, each range reads one input and the condition folds away.

    Only where every boundary is a whole number of vectors; True when done."""
    inner = loops[-1]
    ext = extent(sch, inner)
    if ext is None or len(loops) < 2:
        return False
    cuts = sorted(b for b in _select_boundaries(sch, block) if 0 < b < ext)
    if not cuts or any(b % lanes for b in cuts) or ext % lanes:
        return False
    sizes = [(b - a) // lanes for a, b in zip([0, *cuts[:-1]], cuts, strict=True)]
    vectors, lane = sch.split(inner, [None, lanes])
    sch.vectorize(lane)
    parallel_prefix(sch, loops[:-1], elems, cores)
    # Partitioned by whole vectors: each part's vector loop keeps its own block, whose
    # channel range decides every condition (the last part takes the rest).
    sch.loop_partition(vectors, [*sizes, None])
    return True


def _select_boundaries(sch: s_tir.Schedule, block: SBlockRV) -> set[int]:
    """Constants ``K`` of the conditions ``K <= c`` / ``c < K`` (and their mirrors) of the
    ``if_then_else`` calls and selects in ``block``, ``c`` being its innermost iterator:
    where the value switches from one input to the next."""
    stmt = sch.get(block)
    if not stmt.iter_vars:
        return set()
    var = stmt.iter_vars[-1].var
    found: set[int] = set()

    def cut(cond: ir.expr.Expr) -> None:
        if isinstance(cond, (tirx.And, tirx.Or)):
            cut(cond.a)
            cut(cond.b)
            return
        if not isinstance(cond, (tirx.LT, tirx.LE, tirx.GT, tirx.GE)):
            return
        a, b = cond.a, cond.b
        if a.same_as(var) and isinstance(b, tirx.IntImm):
            # c < K, c >= K: switch at K; c <= K, c > K: at K + 1.
            found.add(int(b.value) + (1 if isinstance(cond, (tirx.LE, tirx.GT)) else 0))
        elif b.same_as(var) and isinstance(a, tirx.IntImm):
            # K <= c, K > c: switch at K; K < c, K >= c: at K + 1.
            found.add(int(a.value) + (1 if isinstance(cond, (tirx.LT, tirx.GE)) else 0))

    def visit(node: object) -> None:
        if isinstance(node, tirx.Select):
            cut(node.condition)
        elif isinstance(node, ir.Call) and node.op.same_as(_IF_THEN_ELSE):
            cut(node.args[0])
        for child in expr_children(node):
            visit(child)

    store = stmt.body
    if isinstance(store, tirx.BufferStore):
        visit(store.value)
    return found
