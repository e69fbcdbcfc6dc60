"""Recognise the shape of a legalized TIR block: which operand is contiguous along which axis.

The schedules do not match operator names; they read the block's access pattern. A
*contraction* is a reduction block ``O[s...] += A[...] * B[...]`` whose output index is a
list of plain spatial iterators; conv2d (NHWC), dense, matmul and batch_matmul all take
this form once legalized.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tvm import ir, s_tir, sym, tirx
from tvm.s_tir.dlight.analysis import SBlockInfo


@dataclass(frozen=True)
class Contraction:
    """A reduction block ``O[s...] += A * B`` with its axes sorted by role.

    ``vec`` is the output's innermost axis (contiguous in the output and in every operand
    that uses it), ``row`` the output axis before it (register-blocked), ``weight_batch``
    the other spatial axes that index the operand using ``vec`` (e.g. the batch of a
    batch_matmul), ``outer`` the remaining spatial axes and ``reduce`` the reduction axes.
    A grouped convolution's input is read at ``vec // group``: constant per vector tile
    as long as the tile width divides ``group``.
    """

    info: SBlockInfo
    vec: int
    row: int | None
    weight_batch: tuple[int, ...]
    outer: tuple[int, ...]
    reduce: tuple[int, ...]
    dtype_bits: int
    group: int = 0  # vector tiles must not straddle aligned blocks of this size (0: none)

    def extent(self, index: int) -> int:
        return int(self.info.iters[index].dom)


def const_extents(info: SBlockInfo) -> bool:
    """Whether every iterator of ``info`` has a static extent."""
    return all(isinstance(i.dom, (int, tirx.IntImm)) for i in info.iters)


def _strip_cast(expr: tirx.PrimExpr) -> tirx.PrimExpr:
    while isinstance(expr, tirx.Cast):
        expr = expr.value
    return expr


def _is_multiply_accumulate(block: s_tir.SBlock) -> bool:
    """``O[i] = O[i] + x * y`` with a zero init (float, or integer: int8 x int8 -> int32)."""
    store = block.body
    if not isinstance(store, tirx.BufferStore) or block.init is None:
        return False
    init = block.init
    if not isinstance(init, tirx.BufferStore):
        return False
    if not isinstance(init.value, (tirx.FloatImm, tirx.IntImm)) or init.value.value != 0:
        return False
    value = store.value
    if not isinstance(value, tirx.Add):
        return False
    lhs, rhs = value.a, value.b
    if isinstance(rhs, ir.TensorLoad) and rhs.source.same_as(store.buffer):
        lhs, rhs = rhs, lhs
    if not (isinstance(lhs, ir.TensorLoad) and lhs.source.same_as(store.buffer)):
        return False
    return isinstance(_strip_cast(rhs), tirx.Mul)


def var_coefficient(index: tirx.PrimExpr, var: tirx.Var) -> int | None:
    """Coefficient of ``var`` in ``index`` (0 if absent), None if not affine in it."""
    coeffs = sym.detect_linear_equation(index, [var])
    if len(coeffs) != 2:
        return None
    coef = coeffs[0]
    return int(coef.value) if isinstance(coef, tirx.IntImm) else None


def uses(expr: tirx.PrimExpr, var: tirx.Var) -> bool:
    return any(v.same_as(var) for v in tirx.analysis.undefined_vars(expr))


def _group_divisors(expr: tirx.PrimExpr, var: tirx.Var) -> list[int] | None:
    """Divisors ``G`` such that ``var`` occurs in ``expr`` only as ``var // G``; None when it
    occurs anywhere else. A grouped convolution reads its input at ``f // G * C_g + c``: it
    is constant along ``f`` inside an aligned block of ``G`` output channels."""
    if isinstance(expr, tirx.FloorDiv) and expr.a.same_as(var):
        return [int(expr.b.value)] if isinstance(expr.b, tirx.IntImm) else None
    if expr.same_as(var):
        return None
    if isinstance(expr, (tirx.Add, tirx.Sub, tirx.Mul, tirx.FloorDiv, tirx.FloorMod)):
        left = _group_divisors(expr.a, var)
        right = _group_divisors(expr.b, var)
        return None if left is None or right is None else left + right
    if isinstance(expr, tirx.Cast):
        return _group_divisors(expr.value, var)
    return [] if not uses(expr, var) else None


def _is_mod_of(expr: tirx.PrimExpr, var: tirx.Var) -> bool:
    """``var % P`` with a constant ``P``."""
    return (
        isinstance(expr, tirx.FloorMod) and expr.a.same_as(var) and isinstance(expr.b, tirx.IntImm)
    )


@dataclass(frozen=True)
class VectorAccess:
    """How the reads of a block depend on a candidate vector axis."""

    users: tuple[tirx.Buffer, ...]  # reads contiguous along the axis
    groups: tuple[int, ...]  # reads constant inside aligned blocks of these sizes


def vector_access(block: s_tir.SBlock, var: tirx.Var) -> VectorAccess | None:
    """Classify every read of ``block`` along ``var``: contiguous (last index, coefficient
    1), grouped-constant, or absent. None if any read would need a gather."""
    users, groups = [], []
    for region in block.reads:
        indices = [r.min for r in region.region]
        for pos, idx in enumerate(indices):
            if not uses(idx, var):
                continue
            if pos == len(indices) - 1 and var_coefficient(idx, var) == 1:
                users.append(region.source)
                continue
            if pos == len(indices) - 1 and _is_mod_of(idx, var):
                # A packed weight's panel axis ``f % P``: contiguous inside aligned blocks
                # of P (its panel index ``f // P`` is grouped-constant, below).
                users.append(region.source)
                groups.append(int(idx.b.value))
                continue
            divisors = _group_divisors(idx, var)
            if divisors is None:
                return None
            groups.extend(divisors)
    return VectorAccess(users=tuple(users), groups=tuple(groups))


def vector_access_ok(block: s_tir.SBlock, var: tirx.Var) -> tuple[bool, list[tirx.Buffer]]:
    """Whether every read of ``block`` is contiguous or constant along ``var`` (no groups);
    also the buffers that are contiguous along it."""
    access = vector_access(block, var)
    if access is None or access.groups:
        return False, list(access.users) if access else []
    return True, list(access.users)


def as_contraction(sch: s_tir.Schedule, info: SBlockInfo) -> Contraction | None:
    """Classify ``info`` as a contraction, or None."""
    block = sch.get(info.block_rv)
    if not info.is_reduction() or len(block.writes) != 1 or not const_extents(info):
        return None
    if not _is_multiply_accumulate(block):
        return None
    out_indices = [r.min for r in block.writes[0].region]
    iter_vars = [i.var for i in info.iters]
    pos_of = {}
    for axis, idx in enumerate(out_indices):
        match = [k for k, v in enumerate(iter_vars) if idx.same_as(v)]
        if not match:
            # Output indices must be plain spatial iterators (a unit axis may be a constant).
            if isinstance(idx, tirx.IntImm):
                continue
            return None
        pos_of[axis] = match[0]
    if len(out_indices) - 1 not in pos_of:
        return None
    vec = pos_of[len(out_indices) - 1]
    access = vector_access(block, iter_vars[vec])
    if access is None:
        return None
    users = access.users
    row = pos_of.get(len(out_indices) - 2)
    spatial = [k for k, it in enumerate(info.iters) if it.kind == "S"]
    reduce = tuple(k for k, it in enumerate(info.iters) if it.kind == "R")
    if len(spatial) + len(reduce) != len(info.iters):
        return None
    weight_batch = []
    for k in spatial:
        if k in (vec, row):
            continue
        for region in block.reads:
            if any(b.same_as(region.source) for b in users) and any(
                uses(r.min, iter_vars[k]) for r in region.region
            ):
                weight_batch.append(k)
                break
    outer = tuple(k for k in spatial if k not in (vec, row) and k not in weight_batch)
    return Contraction(
        info=info,
        vec=vec,
        row=row,
        weight_batch=tuple(weight_batch),
        outer=outer,
        reduce=reduce,
        dtype_bits=int(block.writes[0].source.dtype.bits),
        group=math.gcd(*access.groups) if access.groups else 0,
    )
