"""optc IR -> TVM Relax through TVM's ONNX importer, with static input shapes.

Weights become constants of the Relax module. What the importer refuses is reported
as one line naming the operator.
"""

from __future__ import annotations

import dataclasses
import re
import warnings
from collections.abc import Mapping, Sequence

import tvm
from tvm.relax.frontend import onnx as relax_onnx
from tvm.relax.frontend.onnx import onnx_frontend

from optc.codegen.signature import TensorSpec
from optc.errors import UnsupportedOpError, UserInputError
from optc.frontend import to_onnx
from optc.ir import Graph, Node

IMPORTER = f"TVM {tvm.__version__}'s Relax ONNX importer"
_C_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
CONTRIB_OPS = frozenset(("com.microsoft", op) for op in (
    "Attention", "Gelu", "FastGelu", "BiasGelu"))
"""onnxruntime contrib ops TVM's importer converts (by op type; the ``fuse`` pass emits them)."""


def input_specs(graph: Graph, shapes: Mapping[str, Sequence[int]] | None) -> tuple[TensorSpec, ...]:
    """Static input specs; symbolic or unknown dims need an entry in ``shapes``."""
    shapes = dict(shapes or {})
    unknown = sorted(set(shapes) - set(graph.input_names))
    if unknown:
        raise UserInputError(f"shapes given for unknown inputs {unknown}; the model's inputs "
                             f"are {list(graph.input_names)}")
    specs = []
    for value in graph.inputs:
        if value.dtype is None:
            raise UserInputError(f"input {value.name!r} has no dtype")
        if value.name in shapes:
            shape = tuple(int(d) for d in shapes[value.name])
            if value.shape is not None and len(shape) != len(value.shape):
                raise UserInputError(f"shape {list(shape)} for input {value.name!r} has rank "
                                     f"{len(shape)}, the model's has {len(value.shape)}")
        elif value.is_static():
            shape = tuple(int(d) for d in value.shape or ())
        else:
            raise UserInputError(f"input {value.name!r} has symbolic shape {value.shape}; "
                                 "give static shapes (e.g. shapes={name: [1, 3, 224, 224]})")
        specs.append(TensorSpec(value.name, value.dtype, shape))
    return tuple(specs)


def import_graph(graph: Graph, inputs: Sequence[TensorSpec]) -> tvm.IRModule:
    """Relax module of ``graph`` with static input shapes; unsupported ops are named."""
    foreign = sorted({f"{n.domain}::{n.op}" for n in graph.nodes
                      if n.domain not in ("", "ai.onnx") and (n.domain, n.op) not in CONTRIB_OPS})
    if foreign:
        domain, _, op = foreign[0].partition("::")
        raise UnsupportedOpError(op, IMPORTER, domain)
    graph, renames = c_safe_inputs(graph)
    specs = {renames.get(spec.name, spec.name): spec for spec in inputs}
    model = to_onnx(graph)
    try:
        with warnings.catch_warnings():
            # TVM re-runs the ONNX checker and warns about intermediate types optc leaves
            # partially known; the model was checked on the way in.
            warnings.simplefilter("ignore", UserWarning)
            return relax_onnx.from_onnx(
                model, shape_dict={n: list(s.shape or ()) for n, s in specs.items()},
                dtype_dict={n: s.dtype for n, s in specs.items()}, keep_params_in_input=False)
    except tvm.error.OpNotImplemented as exc:
        ops = sorted(str(exc).rpartition(":")[2].replace(" ", "").split(","))
        also = f" (also unsupported: {', '.join(ops[1:])})" if len(ops) > 1 else ""
        raise UnsupportedOpError(ops[0], IMPORTER + also) from exc
    except (ValueError, TypeError, KeyError, IndexError, RuntimeError) as exc:
        op = _failing_converter(exc)
        where = f" (operator {op})" if op else ""
        raise UserInputError(f"{IMPORTER} cannot import {graph.name!r}{where}: "
                             f"{first_line(exc)}") from exc


def c_safe_inputs(graph: Graph) -> tuple[Graph, dict[str, str]]:
    """``graph`` with inputs that are not C identifiers renamed, and the renames.

    TVM's CUDA code generator prints input names as kernel parameter names unchanged,
    so ``gpu_0/data_0`` (ResNet50's input) gives CUDA source that does not compile. The
    renamed input feeds an ``Identity`` producing the original name, so the rest of the
    graph is untouched; the VM takes inputs by position, so callers never see the names.
    """
    renames: dict[str, str] = {}
    for index, value in enumerate(graph.inputs):
        if not _C_IDENTIFIER.fullmatch(value.name):
            name = f"input_{index}"
            while graph.has_value(name) or name in renames.values():
                name += "_"
            renames[value.name] = name
    if not renames:
        return graph, renames
    inputs = tuple(dataclasses.replace(v, name=renames.get(v.name, v.name)) for v in graph.inputs)
    aliases = tuple(Node("Identity", (renames[v.name],), (v,)) for v in graph.inputs
                    if v.name in renames)
    return graph.replace(inputs=inputs, nodes=aliases + graph.nodes), renames


def _failing_converter(exc: BaseException) -> str | None:
    """The ONNX operator whose converter raised ``exc``, if it came from one.

    TVM's errors do not say which node they are about; its converters are classes named
    after the operator whose class methods (``cls``) appear in the traceback.
    """
    found = None
    tb = exc.__traceback__
    while tb is not None:
        owner = tb.tb_frame.f_locals.get("cls")
        if isinstance(owner, type) and tb.tb_frame.f_code.co_filename == onnx_frontend.__file__:
            found = owner.__name__
        tb = tb.tb_next
    return found


def first_line(error: BaseException | str) -> str:
    """The first line of an error message (TVM's run to pages), at most 300 characters."""
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0][:300]
