"""The optc IR: an immutable graph of ``Node`` s over named ``Value`` s.

Shaped like a jaxpr: a graph lists its inputs, its nodes in topological order, its
outputs and its parameters (large constant tensors, shared by reference between
graphs). Nothing is mutated in place: an edit builds a new ``Graph`` and an edit that
changes nothing returns the very same object, so ``after is not before`` tells a pass
manager whether anything happened.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterable, Iterator, Mapping
from types import MappingProxyType
from typing import Any

import numpy as np

from optc.ir.annotations import Annotation

Dim = int | str | None
"""One dimension: a static size, a symbolic name, or None when unknown."""

Shape = tuple[Dim, ...] | None
"""A tensor shape; None when even the rank is unknown."""


def frozen_mapping(items: Mapping[str, Any] | Iterable[tuple[str, Any]] | None = None,
                   ) -> Mapping[str, Any]:
    """A read-only mapping; used for attributes, params and metadata."""
    if isinstance(items, MappingProxyType):
        return items
    return MappingProxyType(dict(items or {}))


def freeze_array(array: np.ndarray) -> np.ndarray:
    """Mark a parameter array read-only so graphs sharing it cannot corrupt each other."""
    if array.flags.writeable:
        array = array.view()
        array.flags.writeable = False
    return array


@dataclasses.dataclass(frozen=True)
class Value:
    """A named tensor: dtype such as ``"float32"`` (None if unknown) and shape."""

    name: str
    dtype: str | None = None
    shape: Shape = None
    annotations: tuple[Annotation, ...] = ()

    def __post_init__(self) -> None:
        # Accept lists and numpy ints from callers, store hashable immutable tuples.
        if self.shape is not None and not (type(self.shape) is tuple and all(
                d is None or type(d) in (int, str) for d in self.shape)):
            object.__setattr__(self, "shape", tuple(
                int(d) if isinstance(d, np.integer) else d for d in self.shape))
        if type(self.annotations) is not tuple:
            object.__setattr__(self, "annotations", tuple(self.annotations))

    @property
    def rank(self) -> int | None:
        return None if self.shape is None else len(self.shape)

    def is_static(self) -> bool:
        return self.shape is not None and all(isinstance(d, int) for d in self.shape)

    def with_type(self, dtype: str | None, shape: Shape) -> Value:
        if dtype == self.dtype and shape == self.shape:
            return self
        return dataclasses.replace(self, dtype=dtype, shape=shape)


@dataclasses.dataclass(frozen=True)
class TypeAttr:
    """A type given as an attribute value (ONNX ``TYPE_PROTO``, e.g. ``Optional``'s ``type``)."""

    dtype: str
    shape: Shape = None


@dataclasses.dataclass(frozen=True, eq=False)
class Node:
    """One operation. ``inputs`` name values ('' marks an omitted optional input).

    ``attrs`` hold ints, floats, strings, bytes, tuples of those, numpy arrays
    (tensor attributes), ``TypeAttr`` s and ``Graph`` s (control-flow bodies).
    """

    op: str
    inputs: tuple[str, ...]
    outputs: tuple[Value, ...]
    attrs: Mapping[str, Any] = dataclasses.field(default_factory=frozen_mapping)
    domain: str = ""
    name: str = ""
    annotations: tuple[Annotation, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "outputs", tuple(self.outputs))
        if not isinstance(self.attrs, MappingProxyType):  # a proxy comes from another Node
            attrs = {key: _freeze_attr(value) for key, value in self.attrs.items()}
            object.__setattr__(self, "attrs", frozen_mapping(attrs))
        object.__setattr__(self, "annotations", tuple(self.annotations))

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(v.name for v in self.outputs)

    def attr(self, key: str, default: Any = None) -> Any:
        return self.attrs.get(key, default)

    def replace(self, **changes: Any) -> Node:
        """A copy with some fields replaced; ``self`` itself if nothing would change."""
        if all(_same(getattr(self, key), new) for key, new in changes.items()):
            return self
        return dataclasses.replace(self, **changes)

    def subgraphs(self) -> Iterator[Graph]:
        for value in self.attrs.values():
            if isinstance(value, Graph):
                yield value
            elif isinstance(value, tuple) and value and isinstance(value[0], Graph):
                yield from value


@dataclasses.dataclass(frozen=True, eq=False)
class Graph:
    """An immutable computation graph. Compare structure with ``structural_hash()``."""

    inputs: tuple[Value, ...]
    nodes: tuple[Node, ...]
    outputs: tuple[Value, ...]
    params: Mapping[str, np.ndarray] = dataclasses.field(default_factory=frozen_mapping)
    name: str = "main"
    opsets: Mapping[str, int] = dataclasses.field(default_factory=frozen_mapping)
    metadata: Mapping[str, str] = dataclasses.field(default_factory=frozen_mapping)

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "nodes", tuple(self.nodes))
        object.__setattr__(self, "outputs", tuple(self.outputs))
        params = {k: freeze_array(np.asarray(v)) for k, v in self.params.items()}
        object.__setattr__(self, "params", frozen_mapping(params))
        object.__setattr__(self, "opsets", frozen_mapping(self.opsets))
        object.__setattr__(self, "metadata", frozen_mapping(self.metadata))

    # -- lookups (cached: the graph never changes) ------------------------------
    @functools.cached_property
    def _producers(self) -> Mapping[str, Node]:
        return {out.name: node for node in self.nodes for out in node.outputs if out.name}

    @functools.cached_property
    def _consumers(self) -> Mapping[str, tuple[Node, ...]]:
        users: dict[str, list[Node]] = {}
        for node in self.nodes:
            for name in dict.fromkeys(node_reads(node)):
                users.setdefault(name, []).append(node)
        return {k: tuple(v) for k, v in users.items()}

    @functools.cached_property
    def _values(self) -> Mapping[str, Value]:
        table: dict[str, Value] = {}
        for name, array in self.params.items():
            table[name] = param_value(name, array)
        for value in self.inputs:
            table[value.name] = value
        for node in self.nodes:
            for out in node.outputs:
                if out.name:  # '' marks an omitted optional output, not a value
                    table[out.name] = out
        return table

    def producer(self, name: str) -> Node | None:
        """The node that writes ``name``; None for inputs, params and unknown names."""
        return self._producers.get(name)

    def consumers(self, name: str) -> tuple[Node, ...]:
        """Nodes reading ``name`` (subgraph reads included), in graph order."""
        return self._consumers.get(name, ())

    def value(self, name: str) -> Value:
        """The typed value named ``name``; raises KeyError if no input, param or node makes it."""
        return self._values[name]

    def has_value(self, name: str) -> bool:
        return name in self._values

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(v.name for v in self.outputs)

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(v.name for v in self.inputs)

    def param_bytes(self) -> int:
        return int(sum(a.nbytes for a in self.params.values()))

    def op_histogram(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for node in self.nodes:
            key = node.op if node.domain in ("", "ai.onnx") else f"{node.domain}::{node.op}"
            counts[key] = counts.get(key, 0) + 1
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))

    # -- edits -------------------------------------------------------------------
    def replace(self, **changes: Any) -> Graph:
        """A copy with some fields replaced (``nodes=...``, ``params=...``).

        Returns ``self`` when every new field holds the same objects as the old one, so
        that a pass which rebuilt an identical graph still reports "unchanged".
        """
        if all(_same(getattr(self, key), new) for key, new in changes.items()):
            return self
        return dataclasses.replace(self, **changes)

    # -- identity ----------------------------------------------------------------
    @functools.cached_property
    def _hash(self) -> str:
        from optc.ir.hashing import compute_structural_hash

        return compute_structural_hash(self)

    def structural_hash(self) -> str:
        """SHA-256 of the canonical text with parameter contents digested; a cache key."""
        return self._hash

    def __repr__(self) -> str:
        return (f"Graph({self.name!r}, inputs={len(self.inputs)}, nodes={len(self.nodes)}, "
                f"outputs={len(self.outputs)}, params={len(self.params)})")


def _freeze_attr(value: Any) -> Any:
    """Attribute values as immutable Python data: lists -> tuples, numpy scalars -> Python,
    tensor attributes read-only."""
    if isinstance(value, np.ndarray):
        return freeze_array(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, list | tuple):
        return tuple(_freeze_attr(item) for item in value)
    return value


def _same(old: Any, new: Any) -> bool:
    """True when ``new`` holds the very objects of ``old`` (equal scalars and Values count).

    Nodes and arrays compare by identity: two equal-looking nodes are still different
    objects in a graph, and comparing arrays by content would cost a pass of the data.
    """
    if old is new:
        return True
    if isinstance(old, tuple | list) and isinstance(new, tuple | list):
        return len(old) == len(new) and all(_same(a, b) for a, b in zip(old, new, strict=True))
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        return old.keys() == new.keys() and all(_same(old[k], new[k]) for k in old)
    if isinstance(old, str | int | float | bytes | Value | TypeAttr | Annotation) \
            and type(old) is type(new):
        return bool(old == new)
    return False


def node_reads(node: Node) -> Iterator[str]:
    """Every value name the node reads: its inputs and its subgraphs' outer-scope reads."""
    for name in node.inputs:
        if name:
            yield name
    for sub in node.subgraphs():
        yield from outer_reads(sub)


def outer_reads(graph: Graph) -> list[str]:
    """Names a (sub)graph reads but does not define itself: its captures from outside."""
    defined = set(graph.input_names) | set(graph.params)
    captured: dict[str, None] = {}
    for node in graph.nodes:
        for name in node_reads(node):
            if name not in defined:
                captured[name] = None
        defined.update(node.output_names)
    for out in graph.output_names:
        if out not in defined:
            captured[out] = None
    return list(captured)


def param_value(name: str, array: np.ndarray) -> Value:
    return Value(name, dtype_name(array.dtype), tuple(int(d) for d in array.shape))


def dtype_name(dtype: np.dtype) -> str:
    """optc's dtype name for a numpy (or ml_dtypes) dtype: ``float32``, ``bfloat16``, ..."""
    dtype = np.dtype(dtype)
    if dtype.kind in ("U", "S", "O"):
        return "string"
    return dtype.name
