"""ONNX -> optc IR.

Loads a model file (external data included, confined to the model's folder), checks
it, runs ONNX shape inference so that every value carries the best known type, and
converts it into an immutable ``Graph``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import numpy_helper

from optc.errors import InvalidModelError
from optc.frontend.dtypes import dtype_from_onnx, dtype_from_type_proto
from optc.frontend.external_data import load_external_data_safely
from optc.ir.graph import Dim, Graph, Node, Shape, TypeAttr, Value

log = logging.getLogger(__name__)

_A = onnx.AttributeProto


def load_onnx(path: str | os.PathLike[str], infer_shapes: bool = True) -> Graph:
    """Read an ONNX file into a ``Graph``; bad files raise ``InvalidModelError`` (exit 2)."""
    return from_onnx(read_onnx_model(path), infer_shapes=infer_shapes)


def read_onnx_model(path: str | os.PathLike[str]) -> onnx.ModelProto:
    """Parse and check an ONNX file, loading external data from inside its folder only."""
    path = Path(path)
    if path.is_dir():
        raise InvalidModelError(f"{path}: is a directory, not an ONNX model file")
    if not path.is_file():
        raise InvalidModelError(f"{path}: no such model file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, RuntimeError, ValueError, OSError) as exc:
        raise InvalidModelError(f"{path}: not a readable ONNX model ({_first_line(exc)})") \
            from exc
    if not model.graph.node and not model.graph.output:
        raise InvalidModelError(f"{path}: not an ONNX model (no graph found)")
    load_external_data_safely(model, path.parent)
    return model


def from_onnx(model: onnx.ModelProto, infer_shapes: bool = True) -> Graph:
    """Convert an in-memory ``ModelProto``; runs the ONNX checker and shape inference."""
    try:
        onnx.checker.check_model(model)
    except (onnx.checker.ValidationError, ValueError) as exc:
        if "2GB" not in str(exc):  # >2 GB protos cannot be checked in memory
            raise InvalidModelError(f"invalid ONNX model: {_first_line(exc)}") from exc
    if model.functions:
        names = ", ".join(sorted(f.name for f in model.functions))
        raise InvalidModelError(f"model-local ONNX functions are not supported yet ({names}); "
                                "export with functions inlined")
    if infer_shapes:
        model = _with_inferred_shapes(model)
    opsets = {op.domain or "": op.version for op in model.opset_import}
    metadata = {p.key: p.value for p in model.metadata_props}
    return _graph_from_proto(model.graph, outer_types={}, opsets=opsets, metadata=metadata)


def _with_inferred_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    try:
        return onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception as exc:  # inference is best effort; the declared types remain
        log.warning("ONNX shape inference failed, keeping declared types: %s",
                    _first_line(exc))
        return model


def _graph_from_proto(proto: onnx.GraphProto, outer_types: dict[str, Value],
                      opsets: dict[str, int] | None = None,
                      metadata: dict[str, str] | None = None) -> Graph:
    """A graph or a control-flow body; bodies have no opsets of their own (they inherit)."""
    if proto.sparse_initializer:
        raise InvalidModelError("sparse initializers are not supported")
    params = {init.name: _tensor_to_array(init) for init in proto.initializer}
    types = dict(outer_types)
    for vi in list(proto.input) + list(proto.value_info) + list(proto.output):
        types[vi.name] = value_from_onnx(vi)
    # Old models (IR < 4) list initializers as inputs too; they are parameters here.
    inputs = tuple(types[vi.name] for vi in proto.input if vi.name not in params)
    nodes = tuple(_node_from_proto(n, types) for n in proto.node)
    outputs = tuple(types[vi.name] for vi in proto.output)
    return Graph(inputs, nodes, outputs, params, name=proto.name or "main",
                 opsets=opsets or {}, metadata=metadata or {})


def _node_from_proto(proto: onnx.NodeProto, types: dict[str, Value]) -> Node:
    attrs = {a.name: _attr_value(a, types) for a in proto.attribute}
    outputs = tuple(types.get(name, Value(name)) for name in proto.output)
    return Node(proto.op_type, tuple(proto.input), outputs, attrs,
                domain="" if proto.domain == "ai.onnx" else proto.domain, name=proto.name)


def _attr_value(attr: onnx.AttributeProto, types: dict[str, Value]) -> Any:
    if attr.ref_attr_name:
        raise InvalidModelError(f"attribute {attr.name!r} refers to a function attribute")
    kind = attr.type
    if kind == _A.FLOAT:
        return float(attr.f)
    if kind == _A.INT:
        return int(attr.i)
    if kind == _A.STRING:
        return _decode(attr.s)
    if kind == _A.TENSOR:
        return _tensor_to_array(attr.t)
    if kind == _A.GRAPH:
        return _graph_from_proto(attr.g, types)
    if kind == _A.FLOATS:
        return tuple(float(x) for x in attr.floats)
    if kind == _A.INTS:
        return tuple(int(x) for x in attr.ints)
    if kind == _A.STRINGS:
        return tuple(_decode(s) for s in attr.strings)
    if kind == _A.GRAPHS:
        return tuple(_graph_from_proto(g, types) for g in attr.graphs)
    if kind == _A.TYPE_PROTO:
        return TypeAttr(*_attr_type(attr.tp, attr.name))
    if kind == _A.TYPE_PROTOS:
        return tuple(TypeAttr(*_attr_type(tp, attr.name)) for tp in attr.type_protos)
    raise InvalidModelError(
        f"attribute {attr.name!r} has type {_A.AttributeType.Name(kind)}, not supported")


def _attr_type(type_proto: onnx.TypeProto, name: str) -> tuple[str, Shape]:
    dtype, shape = type_from_onnx(type_proto, f"type attribute {name!r}")
    if dtype is None:
        raise InvalidModelError(f"type attribute {name!r} has no element type")
    return dtype, shape


def _decode(raw: bytes) -> str | bytes:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw


def _tensor_to_array(tensor: onnx.TensorProto) -> np.ndarray:
    if tensor.data_location == onnx.TensorProto.EXTERNAL:
        raise InvalidModelError(f"tensor {tensor.name!r}: external data was not loaded")
    try:
        return numpy_helper.to_array(tensor)
    except (ValueError, TypeError, KeyError) as exc:  # data size disagrees with dims/type
        raise InvalidModelError(f"tensor {tensor.name!r} is malformed: {_first_line(exc)}") \
            from exc


def value_from_onnx(info: onnx.ValueInfoProto) -> Value:
    """A ``Value`` from an ONNX value info: tensors, sequences and optionals (maps refused)."""
    if info.type.WhichOneof("value") is None:
        return Value(info.name)
    dtype, shape = type_from_onnx(info.type, f"value {info.name!r}")
    return Value(info.name, dtype, shape)


def type_from_onnx(type_proto: onnx.TypeProto, where: str) -> tuple[str | None, Shape]:
    """(dtype, shape) of an ONNX type; containers have no shape (see ``optc.ir.dtypes``)."""
    if type_proto.WhichOneof("value") != "tensor_type":
        return dtype_from_type_proto(type_proto, where), None
    tensor = type_proto.tensor_type
    dtype = dtype_from_onnx(tensor.elem_type)
    if not tensor.HasField("shape"):
        return dtype, None
    dims: list[Dim] = []
    for dim in tensor.shape.dim:
        # ONNX inference can leave -1 (its "unknown" in some ops' data propagation).
        if dim.HasField("dim_value") and dim.dim_value >= 0:
            dims.append(int(dim.dim_value))
        elif dim.HasField("dim_param") and dim.dim_param:
            dims.append(dim.dim_param)
        else:
            dims.append(None)
    return dtype, tuple(dims)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]
