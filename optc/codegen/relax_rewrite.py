"""Run one Relax expression mutator over every Relax function of a module; rebuild a
conv2d call with some of its attributes changed (the rewrites' common edit)."""

from __future__ import annotations

from typing import Any

import tvm
from tvm import relax

_CONV2D_ATTRS = ("strides", "padding", "dilation", "groups", "data_layout", "kernel_layout",
                 "out_layout", "out_dtype")


def rewrite_functions(mutator: relax.PyExprMutator, mod: tvm.IRModule) -> tvm.IRModule:
    """``mod`` with each Relax function replaced by ``mutator``'s rewrite of it (PrimFuncs
    the mutator emitted included); other functions are kept as they are."""
    for gvar, func in mod.functions_items():
        if isinstance(func, relax.Function):
            mutator.builder_.update_func(gvar, mutator.visit_expr(func))
    return mutator.builder_.get()


def conv2d_like(
    call: relax.Call, data: relax.Expr, weight: relax.Expr, **changes: Any
) -> relax.Call:
    """``relax.op.nn.conv2d(data, weight)`` with the attributes of the conv2d ``call``,
    those named in ``changes`` replaced (e.g. ``padding``, ``out_dtype``)."""
    attrs = {name: getattr(call.attrs, name) for name in _CONV2D_ATTRS}
    unknown = set(changes) - set(attrs)
    if unknown:
        raise TypeError(f"not conv2d attributes: {sorted(unknown)}")
    return relax.op.nn.conv2d(data, weight, **{**attrs, **changes})
