"""Apply the CPU schedule rules to every unscheduled PrimFunc of an IRModule."""

from __future__ import annotations

import dataclasses
import logging

import tvm
import tvm_ffi
from tvm import ir, relax, s_tir, tirx
from tvm.s_tir import meta_schedule as ms
from tvm.s_tir.dlight.analysis import SBlockInfo, normalize_prim_func
from tvm.s_tir.dlight.base import try_inline

from .analysis import Contraction, as_contraction
from .contraction import Knobs, schedule_contraction
from .depthwise import as_depthwise, choose_plan, schedule_depthwise
from .hw import CpuInfo, cpu_info
from .loops import schedule_injective
from .reduction import schedule_inner_reduction, schedule_spatial_vector_reduction
from .rfactor import schedule_vector_rfactor
from .rowreduce import schedule_rows
from .vnni import kernel_available, packed_kernel, schedule_vnni

logger = logging.getLogger(__name__)

_SCHEDULED = "tirx.is_scheduled"


def _is_scheduled(func: tirx.PrimFunc) -> bool:
    return func.attrs is not None and _SCHEDULED in func.attrs and bool(func.attrs[_SCHEDULED])


def _is_identity_copy(sch: s_tir.Schedule, info: SBlockInfo) -> bool:
    """A spatial block that only copies its input at the same index (a pad without
    padding); inlining it costs nothing in the consumer."""
    store = sch.get(info.block_rv).body
    if not info.is_injective() or not isinstance(store, tirx.BufferStore):
        return False
    load = store.value
    return isinstance(load, tvm.ir.TensorLoad) and bool(
        tvm_ffi.structural_equal(list(load.indices), list(store.indices))
    )


def _reads_elementwise(sch: s_tir.Schedule, consumer: SBlockInfo, buffer: tirx.Buffer) -> bool:
    """Whether ``consumer`` reads ``buffer`` at exactly the indices it writes."""
    block = sch.get(consumer.block_rv)
    if len(block.writes) != 1:
        return False
    out = [r.min for r in block.writes[0].region]
    for region in block.reads:
        if region.source.same_as(buffer):
            idx = [r.min for r in region.region]
            return len(idx) == len(out) and all(
                tvm_ffi.structural_equal(a, b) for a, b in zip(idx, out, strict=True)
            )
    return False


def _single_reduction(infos: list[SBlockInfo]) -> int | None:
    """The position of the function's one reduction block, None unless exactly one."""
    reductions = [i for i, info in enumerate(infos) if not info.is_injective()]
    return reductions[0] if len(reductions) == 1 else None


def _inline_consumers(
    sch: s_tir.Schedule, infos: list[SBlockInfo], pos: int
) -> tuple[SBlockInfo | None, list[SBlockInfo]]:
    """Inline the blocks after the reduction at ``pos`` where TVM can; of those left,
    the first one reading the reduction's output at the indices it writes becomes the
    epilogue computed on the register tile. Returns (epilogue, the other consumers)."""
    consumers = try_inline(sch, list(infos[pos + 1 :]))
    out_buf = sch.get(infos[pos].block_rv).writes[0].source
    if consumers and _reads_elementwise(sch, consumers[0], out_buf):
        return consumers[0], consumers[1:]
    return None, consumers


def _schedule_contraction_func(
    sch: s_tir.Schedule, infos: list[SBlockInfo], cpu: CpuInfo, knobs: Knobs | None = None
) -> bool:
    pos = _single_reduction(infos)
    if pos is None:
        return False
    found = packed_kernel(sch.get(infos[pos].block_rv))
    packed = found is not None and kernel_available(found[0], cpu)  # VNNI / AVX2
    con: Contraction | None = None if packed else as_contraction(sch, infos[pos])
    if con is None and not packed:
        return False
    producers = []
    for info in infos[:pos]:
        if _is_identity_copy(sch, info):
            sch.compute_inline(info.block_rv)
        else:
            producers.append(info)
    epilogue, consumers = _inline_consumers(sch, infos, pos)
    if packed:
        info = _refresh_info(sch, infos[pos])
        if info is None or not schedule_vnni(sch, info, epilogue, cpu):
            return False
    else:
        # The contraction analysis ran before inlining; refresh the loop handles it holds.
        con = _refresh(sch, con)  # type: ignore[arg-type]
        if con is None:
            return False
        pads = [info.block_rv for info in producers if is_pad(sch, info)]
        left = schedule_contraction(sch, con, epilogue, cpu, knobs, pads)
        if left is None:
            return False
        moved = [pad for pad in pads if pad not in left]
        producers = [info for info in producers if info.block_rv not in moved]
    for info in [*producers, *consumers]:
        schedule_injective(sch, info.block_rv, cpu.lanes(32), cpu.cores)
    return True


def _schedule_depthwise_func(sch: s_tir.Schedule, infos: list[SBlockInfo], cpu: CpuInfo) -> bool:
    """A depthwise conv (``depthwise.py``) with its zero padding inlined and its
    elementwise epilogue in the register tile; False, ``sch`` unchanged, for anything else
    (other producers before it included)."""
    pos = _single_reduction(infos)
    if pos is None:
        return False
    dw = as_depthwise(sch, infos[pos])
    if dw is None:
        return False
    plan = choose_plan(dw, cpu)
    producers = infos[:pos]
    if plan is None or not all(
        _is_identity_copy(sch, info) or is_pad(sch, info) for info in producers
    ):
        return False
    for info in producers:
        sch.compute_inline(info.block_rv)
    epilogue, consumers = _inline_consumers(sch, infos, pos)
    schedule_depthwise(sch, dw, plan, epilogue, cpu)
    for info in consumers:
        schedule_injective(sch, info.block_rv, cpu.lanes(32), cpu.cores)
    return True


def is_pad(sch: s_tir.Schedule, info: SBlockInfo) -> bool:
    """A zero-padding copy (``if_then_else(inside, x[..], 0)``) read only by its consumer."""
    store = sch.get(info.block_rv).body
    return (
        info.is_injective()
        and isinstance(store, tirx.BufferStore)
        and isinstance(store.value, ir.Call)
        and store.value.op.same_as(ir.Op.get("prim.if_then_else"))
        and len(sch.get_consumers(info.block_rv)) == 1
    )


def schedule_contraction_with(sch: s_tir.Schedule, cpu: CpuInfo, knobs: Knobs) -> bool:
    """Schedule a (non-packed) contraction function in place with the tuner's ``knobs``,
    exactly as ``schedule_prim_func`` does with the defaults. False (``sch`` possibly
    half-scheduled: use a copy) if ``sch`` is no such function."""
    infos = normalize_prim_func(sch)
    if infos is None or float_reduction(sch, infos) is None:
        return False
    return _schedule_contraction_func(sch, infos, cpu, knobs)


def float_reduction(sch: s_tir.Schedule, infos: list[SBlockInfo]) -> SBlockInfo | None:
    """The function's one reduction block, None if it has several or if it is an
    integer kernel with a packed form (``vnni.py``; not part of the tuning space)."""
    pos = _single_reduction(infos)
    if pos is None or packed_kernel(sch.get(infos[pos].block_rv)) is not None:
        return None
    return infos[pos]


def _refresh(sch: s_tir.Schedule, con: Contraction) -> Contraction | None:
    info = _refresh_info(sch, con.info)
    return None if info is None else dataclasses.replace(con, info=info)


def _refresh_info(sch: s_tir.Schedule, info: SBlockInfo) -> SBlockInfo | None:
    """``info`` with the loop handles of its block as they are now."""
    loops = sch.get_loops(info.block_rv)
    if len(loops) != len(info.iters):
        return None
    iters = [
        type(it)(kind=it.kind, var=it.var, dom=it.dom, loop_rv=loop)
        for it, loop in zip(info.iters, loops, strict=True)
    ]
    return SBlockInfo(info.name, iters, info.block_rv, reduction_block=True)


def _feeds_reduction_and_more(sch: s_tir.Schedule, info: SBlockInfo) -> bool:
    """An injective block read by a reduction and by another block (softmax's ``exp``):
    inlined, it would be computed once per consumer; it is cheaper stored once."""
    if not info.is_injective():
        return False
    consumers = sch.get_consumers(info.block_rv)
    if len(consumers) < 2:
        return False
    return any(sch.get(c).init is not None for c in consumers)


def _schedule_generic(sch: s_tir.Schedule, infos: list[SBlockInfo], cpu: CpuInfo) -> None:
    """Fallback: every block at root, vectorized where contiguous, parallel outside."""
    lanes = cpu.lanes(32)
    keep = [info for info in infos if _feeds_reduction_and_more(sch, info)]
    rest = try_inline(sch, [info for info in infos if info not in keep])
    for info in [i for i in infos if i in keep or i in rest]:
        if info.is_injective():
            schedule_injective(sch, info.block_rv, lanes, cpu.cores)
        elif not (
            schedule_spatial_vector_reduction(sch, info, lanes, cpu.cores)
            or schedule_vector_rfactor(sch, info, lanes, cpu.cores)
        ):
            schedule_inner_reduction(sch, info, cpu.cores)


def schedule_prim_func(func: tirx.PrimFunc, target: tvm.target.Target) -> tirx.PrimFunc | None:
    """Scheduled copy of ``func`` or None when no rule applies (it is then left as is)."""
    cpu = cpu_info(target)
    sch = s_tir.Schedule(func)
    infos = normalize_prim_func(sch)
    if infos is None:
        return None
    if _schedule_depthwise_func(sch, infos, cpu) or _schedule_contraction_func(sch, infos, cpu):
        return sch.mod["main"]
    # softmax / layer norm: every stage of a row under one loop over the rows (not on a
    # single row: the generic path below vectorizes its reductions at root).
    reduced = schedule_rows(func, cpu.lanes(32), cpu.cores)
    if reduced is not None:
        return reduced.mod["main"]
    sch = s_tir.Schedule(func)
    infos = normalize_prim_func(sch)
    if infos is None:
        return None
    _schedule_generic(sch, infos, cpu)
    return sch.mod["main"]


def apply_cpu_schedules(
    mod: tvm.IRModule, target: tvm.target.Target, database: ms.Database | None = None
) -> tvm.IRModule:
    """Schedule every PrimFunc of ``mod`` not already marked ``tirx.is_scheduled``.

    Tuned schedules come first: those of ``database`` (default: the MetaSchedule database
    of the enclosing ``with database:``, if any). Functions no rule understands are left
    unchanged (TVM still compiles them, serially); a rule that fails half-way is logged
    and the function is left unscheduled.
    """
    database = database if database is not None else ms.Database.current()
    if database is not None:
        with database, target:
            mod = relax.transform.MetaScheduleApplyDatabase(enable_warning=False)(mod)
    updates = {}
    for gvar, func in mod.functions_items():
        if not isinstance(func, tirx.PrimFunc) or _is_scheduled(func):
            continue
        try:
            new = schedule_prim_func(func, target)
        except (RuntimeError, ValueError) as err:  # ScheduleError, TVM InternalError
            logger.warning("no CPU schedule for %s: %s", gvar.name_hint, str(err).splitlines()[0])
            continue
        if new is not None:
            updates[gvar] = new.with_attr(_SCHEDULED, True)
    if not updates:
        return mod
    mod = mod.shallow_copy() if hasattr(mod, "shallow_copy") else mod
    for gvar, func in updates.items():
        mod[gvar] = func
    return mod
