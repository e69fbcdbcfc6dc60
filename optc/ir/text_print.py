"""Canonical text form of a graph: printing. ``text_parse`` reads it back.

The form is meant for people (``optc show --ir``) and for golden tests, and it
round-trips: ``parse_graph(print_graph(g), tensors=tensor_store(g))`` is structurally
equal to ``g``. Small tensors are printed inline; larger ones as ``sha256:<digest>``,
whose contents the parser takes from a tensor store keyed by digest.

    graph main {
      opset "" = 17
      input %x: float32[1,3,8,8]
      param %w: float32[4,3,3,3] = sha256:5d1c...
      %y: float32[1,4,8,8] = Conv(%x, %w, _) {kernel_shape=[3, 3], pads=[1, 1, 1, 1]}
      output %y: float32[1,4,8,8]
    }

Types are ``dtype[dims]``: ``?`` for an unknown dtype or dim, no brackets for an unknown
rank, ``[]`` for a scalar, ``seq(float32)`` / ``optional(int64)`` for containers. ``_``
marks an omitted optional input or output; names that are not plain are JSON-quoted
(``%"a b"``, ``"com.example"::Op``). Attributes are ints, floats (``inf``, ``nan``),
strings, ``b"..."`` bytes, lists, ``tensor<int64[2]>[1, 2]`` and ``type<float32[2]>``;
control-flow bodies are nested ``graph`` blocks. ``@kind(field=...)`` annotations follow
a value or a node, and ``# "name"`` ends a node line with the node's name.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterator
from typing import Any

import numpy as np

from optc.ir.annotations import Annotation
from optc.ir.graph import Graph, Node, Shape, TypeAttr, Value, dtype_name

DEFAULT_INLINE_LIMIT = 16
"""Tensors with at most this many elements are printed inline."""

_BARE_NAME = re.compile(r"[A-Za-z0-9_.\-/]+\Z")
_BARE_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_RESERVED = frozenset({"inf", "nan", "_"})
"""Identifiers the parser reads as numbers or as "omitted": always quoted."""


def print_graph(graph: Graph, inline_limit: int | None = DEFAULT_INLINE_LIMIT) -> str:
    """The canonical text of ``graph``; ``inline_limit=None`` inlines every tensor."""
    return "\n".join(_graph_lines(graph, inline_limit, indent="")) + "\n"


def array_digest(array: np.ndarray) -> str:
    """Content digest of a tensor: dtype, shape and bytes."""
    array = np.ascontiguousarray(array)
    h = hashlib.sha256()
    h.update(f"{dtype_name(array.dtype)}{list(array.shape)}".encode())
    if array.dtype.kind in ("U", "S", "O"):
        h.update(json.dumps([_as_text(x) for x in array.ravel()]).encode())
    else:
        h.update(array.tobytes())
    return h.hexdigest()


def tensor_store(graph: Graph) -> dict[str, np.ndarray]:
    """Every tensor of a graph (params and tensor attributes, subgraphs too) by digest."""
    store: dict[str, np.ndarray] = {}
    for array in _all_tensors(graph):
        store[array_digest(array)] = array
    return store


def _all_tensors(graph: Graph) -> Iterator[np.ndarray]:
    yield from graph.params.values()
    for node in graph.nodes:
        for value in node.attrs.values():
            if isinstance(value, np.ndarray):
                yield value
        for sub in node.subgraphs():
            yield from _all_tensors(sub)


def _graph_lines(graph: Graph, limit: int | None, indent: str) -> Iterator[str]:
    inner = indent + "  "
    yield f"{indent}graph {_quote_ident(graph.name)} {{"
    for domain, version in sorted(graph.opsets.items()):
        yield f"{inner}opset {json.dumps(domain)} = {version}"
    for key, text in sorted(graph.metadata.items()):
        yield f"{inner}meta {json.dumps(key)} = {json.dumps(text)}"
    for value in graph.inputs:
        yield f"{inner}input {format_value(value)}"
    for name in sorted(graph.params):
        array = graph.params[name]
        yield f"{inner}param {format_value(Value(name, dtype_name(array.dtype), array.shape))}" \
              f" = {_format_tensor_data(array, limit)}"
    for node in graph.nodes:
        yield from _node_lines(node, limit, inner)
    for value in graph.outputs:
        yield f"{inner}output {format_value(value)}"
    yield f"{indent}}}"


def _node_lines(node: Node, limit: int | None, indent: str) -> Iterator[str]:
    # An omitted optional output ('' name) prints as "_", like an omitted input.
    outs = ", ".join(format_value(v) if v.name else "_" for v in node.outputs) or "()"
    op = _quote_ident(node.op)
    if node.domain:
        op = f"{json.dumps(node.domain)}::{op}"
    args = ", ".join(format_ref(n) if n else "_" for n in node.inputs)
    head = f"{indent}{outs} = {op}({args})"
    tail = "".join(" " + format_annotation(a) for a in node.annotations)
    if node.name:
        tail += f" # {json.dumps(node.name)}"
    if not node.attrs:
        yield head + tail
        return
    graphs = {k: v for k, v in node.attrs.items() if _is_graph_attr(v)}
    plain = [f"{k}={_format_attr(v, limit)}" for k, v in sorted(node.attrs.items())
             if k not in graphs]
    if not graphs:
        yield f"{head} {{{', '.join(plain)}}}{tail}"
        return
    # Control-flow bodies are printed as indented blocks, one attribute per line.
    yield f"{head} {{"
    for item in plain:
        yield f"{indent}  {item},"
    for key in sorted(graphs):
        subs = graphs[key] if isinstance(graphs[key], tuple) else (graphs[key],)
        yield f"{indent}  {key}=["
        for sub in subs:
            yield from _graph_lines(sub, limit, indent + "    ")
        yield f"{indent}  ],"
    yield f"{indent}}}{tail}"


def _is_graph_attr(value: Any) -> bool:
    return isinstance(value, Graph) or (
        isinstance(value, tuple) and bool(value) and isinstance(value[0], Graph))


def format_value(value: Value) -> str:
    text = f"{format_ref(value.name)}: {format_type(value.dtype, value.shape)}"
    for ann in value.annotations:
        text += " " + format_annotation(ann)
    return text


def format_ref(name: str) -> str:
    return "%" + (name if _BARE_NAME.match(name) else json.dumps(name))


def format_type(dtype: str | None, shape: Shape) -> str:
    text = dtype or "?"
    if shape is not None:
        text += "[" + ",".join(_format_dim(d) for d in shape) + "]"
    return text


def _format_dim(dim: int | str | None) -> str:
    if dim is None:
        return "?"
    if isinstance(dim, int):
        return str(dim)
    return _quote_ident(dim)


def format_annotation(ann: Annotation) -> str:
    fields = ", ".join(f"{k}={_format_scalar_or_list(v)}" for k, v in ann.fields().items())
    return f"@{ann.kind}({fields})"


def _quote_ident(name: str) -> str:
    return name if _BARE_IDENT.match(name) and name not in _RESERVED else json.dumps(name)


def _format_attr(value: Any, limit: int | None) -> str:
    if isinstance(value, np.ndarray):
        kind = format_type(dtype_name(value.dtype), tuple(value.shape))
        return f"tensor<{kind}>{_format_tensor_data(value, limit)}"
    if isinstance(value, TypeAttr):
        return f"type<{format_type(value.dtype, value.shape)}>"
    if isinstance(value, tuple) and value and isinstance(value[0], TypeAttr):
        return "[" + ", ".join(_format_attr(item, limit) for item in value) + "]"
    return _format_scalar_or_list(value)


def _format_scalar_or_list(value: Any) -> str:
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_format_scalar_or_list(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _format_float(value)
    if isinstance(value, bytes):
        return "b" + json.dumps(value.decode("latin-1"))
    if isinstance(value, str):
        return json.dumps(value)
    raise TypeError(f"cannot print attribute value of type {type(value).__name__}")


def _format_float(value: float) -> str:
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    text = repr(value)
    return text if any(c in text for c in ".e") else text + ".0"


def _format_tensor_data(array: np.ndarray, limit: int | None) -> str:
    if (limit is not None and array.size > limit) or array.dtype.kind == "c":
        return "sha256:" + array_digest(array)
    flat = array.ravel()
    if array.dtype.kind in ("U", "S", "O"):
        items = [json.dumps(_as_text(x)) for x in flat]
    elif array.dtype.kind == "b":
        items = ["true" if x else "false" for x in flat]
    elif array.dtype.kind in "iu":
        items = [str(int(x)) for x in flat]
    else:
        items = [_format_float(float(x)) for x in flat]
    return "[" + ", ".join(items) + "]"


def _as_text(item: Any) -> str:
    return item.decode("utf-8", "surrogateescape") if isinstance(item, bytes) else str(item)
