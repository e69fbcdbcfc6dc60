"""Turn the importer's pre-lowered ``call_tir`` elementwise ops back into Relax operators.

TVM's ONNX importer emits ``Clip`` and constant ``Pad`` directly as TE-generated TIR
functions (``call_tir(maximum, ...)``, ``call_tir(pad, ...)``). Layout conversion cannot
look inside those, so every ReLU6 or explicit pad in a channels-last graph would cost two
transposes. The functions are recognised by their (single-block) TIR body, not by name.
"""

from __future__ import annotations

from tvm import ir, relax, s_tir, tirx

_BINARY = {tirx.Max: relax.op.maximum, tirx.Min: relax.op.minimum}


def _single_store(func: tirx.PrimFunc) -> tuple[tirx.BufferStore, list[tirx.Var]] | None:
    """The store of a function made of one spatial block over its full output, or None."""
    stmt = func.body
    # root block realize -> root block -> loops -> block realize -> block -> store
    while True:
        if isinstance(stmt, s_tir.SBlockRealize):
            stmt = stmt.block
        elif isinstance(stmt, s_tir.SBlock):
            if isinstance(stmt.body, tirx.BufferStore):
                spatial = all(iv.iter_type == tirx.IterVar.DataPar for iv in stmt.iter_vars)
                if stmt.init is not None or not spatial:
                    return None
                return stmt.body, [iv.var for iv in stmt.iter_vars]
            stmt = stmt.body
        elif isinstance(stmt, tirx.For):
            stmt = stmt.body
        else:
            return None


def _plain_indices(indices: list[tirx.PrimExpr], ivars: list[tirx.Var]) -> bool:
    if len(indices) != len(ivars):
        return False
    return all(i.same_as(v) for i, v in zip(indices, ivars, strict=True))


def _param_index(func: tirx.PrimFunc, buffer: tirx.Buffer) -> int | None:
    for k, param in enumerate(func.params):
        if param.same_as(buffer):
            return k
    return None


def _shape(buffer: tirx.Buffer) -> list[int] | None:
    dims = []
    for d in buffer.shape:
        if not isinstance(d, tirx.IntImm):
            return None
        dims.append(int(d))
    return dims


def _as_binary(func: tirx.PrimFunc, args: list[relax.Expr]) -> relax.Expr | None:
    """``out[i] = max|min(a[i], b[()])`` -> ``relax.op.maximum|minimum(a, b)``."""
    found = _single_store(func)
    if found is None:
        return None
    store, ivars = found
    op = _BINARY.get(type(store.value))
    if op is None or not _plain_indices(list(store.indices), ivars):
        return None
    lhs, rhs = store.value.a, store.value.b
    if not (isinstance(lhs, ir.TensorLoad) and isinstance(rhs, ir.TensorLoad)):
        return None
    if not _plain_indices(list(lhs.indices), ivars) or len(rhs.indices) != 0:
        return None
    a, b = _param_index(func, lhs.source), _param_index(func, rhs.source)
    if a is None or b is None or max(a, b) >= len(args):
        return None
    return op(args[a], args[b])


def _pad_before(index: tirx.PrimExpr, var: tirx.Var) -> int | None:
    """``before`` for a read index ``var - before`` (or ``var``)."""
    if index.same_as(var):
        return 0
    if isinstance(index, tirx.Sub) and index.a.same_as(var) and isinstance(index.b, tirx.IntImm):
        return int(index.b.value)
    if isinstance(index, tirx.Add) and index.a.same_as(var) and isinstance(index.b, tirx.IntImm):
        return -int(index.b.value)
    return None


def _as_pad(func: tirx.PrimFunc, args: list[relax.Expr]) -> relax.Expr | None:
    """``out[i] = if_then_else(inside, x[i - before], c)`` -> ``relax.op.nn.pad``."""
    found = _single_store(func)
    if found is None:
        return None
    store, ivars = found
    call = store.value
    if not (isinstance(call, ir.Call) and call.op.same_as(ir.Op.get("prim.if_then_else"))):
        return None
    load, value = call.args[1], call.args[2]
    if not (isinstance(load, ir.TensorLoad) and isinstance(value, tirx.FloatImm)):
        return None
    src = _param_index(func, load.source)
    in_shape, out_shape = _shape(load.source), _shape(store.buffer)
    if src is None or src >= len(args) or in_shape is None or out_shape is None:
        return None
    if not _plain_indices(list(store.indices), ivars) or len(load.indices) != len(ivars):
        return None
    widths = []
    for idx, var, n_in, n_out in zip(load.indices, ivars, in_shape, out_shape, strict=True):
        before = _pad_before(idx, var)
        if before is None or before < 0 or n_out - n_in - before < 0:
            return None
        widths += [before, n_out - n_in - before]
    return relax.op.nn.pad(args[src], widths, pad_value=float(value.value))


def lift_call_tir(call: relax.Call, mod: ir.IRModule) -> relax.Expr | None:
    """A Relax operator equivalent to ``call`` (a ``call_tir``), or None."""
    gvar = call.args[0]
    if not isinstance(gvar, ir.GlobalVar):
        return None
    func = mod.functions.get(gvar)
    args = call.args[1]
    if not isinstance(func, tirx.PrimFunc) or not isinstance(args, relax.Tuple):
        return None
    fields = list(args.fields)
    lifted = _as_binary(func, fields)
    if lifted is None:
        lifted = _as_pad(func, fields)
    return lifted
