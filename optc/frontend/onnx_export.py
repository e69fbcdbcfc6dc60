"""optc IR -> ONNX, in memory or written atomically to disk."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from optc.errors import UserInputError
from optc.frontend.dtypes import type_to_onnx
from optc.ir.graph import Graph, Node, TypeAttr, Value

EXTERNAL_DATA_THRESHOLD = 1 << 30
"""Models whose parameters exceed this many bytes are saved with external data (ONNX
protos cannot exceed 2 GB)."""

MIN_IR_VERSION = 4
"""IR 4 is the first that lets initializers stay out of the graph inputs."""


def to_onnx(graph: Graph, keep_value_types: bool = True) -> onnx.ModelProto:
    """Build a ``ModelProto``; ``keep_value_types`` writes intermediate types as value_info."""
    opsets = dict(graph.opsets) or {"": 17}
    opset_imports = [helper.make_opsetid(domain, version) for domain, version in opsets.items()]
    proto = _graph_to_proto(graph, keep_value_types)
    ir_version = max(MIN_IR_VERSION, helper.find_min_ir_version_for(opset_imports,
                                                                    ignore_unknown=True))
    model = helper.make_model(proto, opset_imports=opset_imports, ir_version=ir_version,
                              producer_name="optc")
    for key, text in graph.metadata.items():
        model.metadata_props.add(key=key, value=text)
    return model


def save_onnx(graph: Graph, path: str | os.PathLike[str], external_data: bool | None = None,
              ) -> Path:
    """Write ``graph`` to ``path`` atomically (temp folder, then rename).

    ``external_data=None`` picks external data for models over 1 GiB of parameters;
    the data file is ``<name>.data`` beside the model.
    """
    path = Path(path)
    model = to_onnx(graph)
    if external_data is None:
        external_data = graph.param_bytes() > EXTERNAL_DATA_THRESHOLD
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise UserInputError(f"{path}: output folder {parent} does not exist")
    if path.is_dir():
        raise UserInputError(f"{path}: is a directory; give a file name for the model")
    try:
        _write_atomically(model, path, parent, external_data)
    except OSError as exc:
        raise UserInputError(f"cannot write {path}: {exc.strerror or exc}") from exc
    return path


def _write_atomically(model: onnx.ModelProto, path: Path, parent: Path,
                      external_data: bool) -> None:
    # Write into a temp folder beside the target (same file system), then rename: a
    # reader never sees a half-written model and a failure leaves nothing behind.
    data_name = path.name + ".data"
    with tempfile.TemporaryDirectory(dir=parent, prefix=".optc-") as tmp:
        tmp_model = Path(tmp) / path.name
        if external_data:
            onnx.save_model(model, str(tmp_model), save_as_external_data=True,
                            all_tensors_to_one_file=True, location=data_name,
                            size_threshold=1024)
            if (Path(tmp) / data_name).exists():  # absent when no tensor passed the threshold
                os.replace(Path(tmp) / data_name, parent / data_name)
        else:
            onnx.save_model(model, str(tmp_model))
        os.replace(tmp_model, path)


def _graph_to_proto(graph: Graph, keep_value_types: bool) -> onnx.GraphProto:
    nodes = [_node_to_proto(n, keep_value_types) for n in graph.nodes]
    inits = [_array_to_tensor(name, array) for name, array in graph.params.items()]
    inputs = [value_to_onnx(v) for v in graph.inputs]
    outputs = [value_to_onnx(v) for v in graph.outputs]
    output_names = set(graph.output_names)
    value_info = []
    if keep_value_types:
        value_info = [value_to_onnx(out) for node in graph.nodes for out in node.outputs
                      if out.name not in output_names and (out.dtype or out.shape is not None)]
    return helper.make_graph(nodes, graph.name, inputs, outputs, initializer=inits,
                             value_info=value_info)


def _node_to_proto(node: Node, keep_value_types: bool) -> onnx.NodeProto:
    proto = helper.make_node(node.op, list(node.inputs), list(node.output_names),
                             name=node.name or None, domain=node.domain or None)
    for key, value in sorted(node.attrs.items()):
        proto.attribute.append(_make_attribute(key, value, keep_value_types))
    return proto


def _make_attribute(key: str, value: Any, keep_value_types: bool) -> onnx.AttributeProto:
    if isinstance(value, np.ndarray):
        return helper.make_attribute(key, _array_to_tensor("", value))
    if isinstance(value, TypeAttr):
        return helper.make_attribute(key, type_to_onnx(value.dtype, value.shape))
    if isinstance(value, tuple) and value and isinstance(value[0], TypeAttr):
        return helper.make_attribute(key, [type_to_onnx(t.dtype, t.shape) for t in value])
    if isinstance(value, Graph):
        return helper.make_attribute(key, _graph_to_proto(value, keep_value_types))
    if isinstance(value, tuple) and value and isinstance(value[0], Graph):
        return helper.make_attribute(key, [_graph_to_proto(g, keep_value_types) for g in value])
    if isinstance(value, tuple) and not value:
        attr = onnx.AttributeProto(name=key, type=onnx.AttributeProto.INTS)
        return attr
    if isinstance(value, tuple) and any(isinstance(v, float) for v in value):
        return helper.make_attribute(key, [float(v) for v in value])
    return helper.make_attribute(key, value)


def _array_to_tensor(name: str, array: np.ndarray) -> onnx.TensorProto:
    if array.dtype == object:
        array = np.vectorize(lambda s: s.encode() if isinstance(s, str) else s,
                             otypes=[object])(array)
    return numpy_helper.from_array(np.asarray(array), name)


def value_to_onnx(value: Value) -> onnx.ValueInfoProto:
    """An ONNX value info for ``value`` (unknown dims stay unnamed)."""
    if value.dtype is None and value.shape is None:
        return helper.make_empty_tensor_value_info(value.name)
    return helper.make_value_info(value.name, type_to_onnx(value.dtype, value.shape))
