"""What one op costs before any hardware is involved: operations and bytes moved.

A rule of the roofline table maps a node, seen through a ``NodeView`` (static shapes,
dtypes, constant inputs), to a ``Work``: arithmetic operations, transcendental
evaluations, the bytes it reads per input and writes per output, its op class, and
whether it is a kernel at all (views and shape queries are not).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable
from typing import Literal

import numpy as np

from optc.errors import UserInputError
from optc.ir.annotations import Precision
from optc.ir.dtypes import split_container
from optc.ir.graph import Graph, Node, Value

Kind = Literal["kernel", "view", "meta"]
"""``kernel``: runs on the device; ``view``: aliases its input (Reshape); ``meta``: reads
only shapes, computed by the compiler (Shape)."""

_BITS = {
    "bool": 8, "int2": 2, "uint2": 2, "int4": 4, "uint4": 4, "int8": 8, "uint8": 8,
    "int16": 16, "uint16": 16, "int32": 32, "uint32": 32, "int64": 64, "uint64": 64,
    "float16": 16, "bfloat16": 16, "float32": 32, "float64": 64, "complex64": 64,
    "complex128": 128, "float4_e2m1fn": 4, "float6_e2m3fn": 6, "float6_e3m2fn": 6,
    "float8_e4m3fn": 8, "float8_e4m3fnuz": 8, "float8_e5m2": 8, "float8_e5m2fnuz": 8,
    "float8_e8m0fnu": 8,
    "string": 64,  # ASSUMPTION: a pointer per element; the text itself is not counted
}


@dataclasses.dataclass(frozen=True)
class Work:
    """Hardware-independent cost of one node.

    ``reads`` / ``writes`` pair value names with bytes, so that the model can drop
    the traffic of intermediates that stay inside a fused kernel. ``dtype`` forces
    the compute dtype (int8 for ``MatMulInteger``); None lets the model infer it.
    ``nested`` is the already-priced cost of control-flow bodies (``If``, ``Loop``).
    """

    flops: float = 0.0
    transcendentals: float = 0.0
    reads: tuple[tuple[str, float], ...] = ()
    writes: tuple[tuple[str, float], ...] = ()
    op_class: str = "elementwise"
    kind: Kind = "kernel"
    dtype: str | None = None
    nested: object | None = None  # a Cost; typed loosely to keep this module import-light


def dtype_bits(dtype: str | None, where: str) -> int:
    """Bits per element of a tensor dtype; a clear error for unknown and container types."""
    if dtype is None:
        raise UserInputError(f"{where} has no dtype; the cost model needs typed values "
                             "(run the ONNX importer's shape inference)")
    if dtype not in _BITS:
        kind = "a container (sequence/optional)" if split_container(dtype) else "unknown"
        raise UserInputError(f"{where} has dtype {dtype!r}, {kind}: the cost model prices "
                             "tensors only")
    return _BITS[dtype]


class NodeView:
    """A node with typed access to its values: static shapes, element counts, bytes.

    ``lookup`` finds any value visible to the node (outer scopes included);
    ``constant`` returns the array of a constant given in the graph (a param or a
    ``Constant``), or None; ``is_constant`` also knows values folded at compile time.
    ``subgraph_cost`` prices a control-flow body with the calling model.
    """

    def __init__(self, node: Node, lookup: Callable[[str], Value],
                 constant: Callable[[str], np.ndarray | None],
                 is_constant: Callable[[str], bool],
                 subgraph_cost: Callable[[Graph], object]) -> None:
        self.node = node
        self._lookup = lookup
        self.constant = constant
        self.is_constant = is_constant
        self.subgraph_cost = subgraph_cost
        bits = [a.bits for a in node.annotations if isinstance(a, Precision)]
        self.weight_bits = bits[0] if bits else None

    @property
    def where(self) -> str:
        return f"{self.node.op} node {self.node.name!r}"

    def value(self, name: str) -> Value:
        try:
            return self._lookup(name)
        except KeyError:
            raise UserInputError(f"{self.where} reads {name!r}, which no input, param or "
                                 "node defines") from None

    def shape(self, name: str) -> tuple[int, ...]:
        """The static shape of ``name``; a clear error when any dimension is unknown."""
        value = self.value(name)
        if not value.is_static():
            dims = "unknown rank" if value.shape is None else list(value.shape)
            raise UserInputError(
                f"{self.where}: value {name!r} has no static shape ({dims}); the roofline "
                "model needs static shapes: give the model concrete input dimensions")
        return value.shape  # type: ignore[return-value]  # is_static() checked the dims

    def numel(self, name: str) -> int:
        return math.prod(self.shape(name))

    def nbytes(self, name: str) -> float:
        """Bytes of ``name``: a ``Precision`` annotation on the value, or on this node for
        its constant inputs of rank 2 or more (its weights, not biases or scales),
        overrides the dtype's width."""
        value = self.value(name)
        bits = next((a.bits for a in value.annotations if isinstance(a, Precision)), None)
        if bits is None and self.weight_bits is not None and self.is_constant(name) \
                and (value.rank or 0) >= 2:
            bits = self.weight_bits
        if bits is None:
            bits = dtype_bits(value.dtype, f"{self.where}: value {name!r}")
        return self.numel(name) * bits / 8.0

    def dtype(self, name: str) -> str | None:
        return self.value(name).dtype

    # -- positional helpers ----------------------------------------------------------
    def has_input(self, index: int) -> bool:
        return index < len(self.node.inputs) and bool(self.node.inputs[index])

    def input(self, index: int) -> str:
        return self.node.inputs[index]

    def output(self, index: int) -> str:
        return self.node.outputs[index].name

    def in_shape(self, index: int = 0) -> tuple[int, ...]:
        return self.shape(self.node.inputs[index])

    def out_shape(self, index: int = 0) -> tuple[int, ...]:
        return self.shape(self.node.outputs[index].name)

    def in_numel(self, index: int = 0) -> int:
        return math.prod(self.in_shape(index))

    def out_numel(self, index: int = 0) -> int:
        return math.prod(self.out_shape(index))

    def used_outputs(self) -> list[str]:
        return [v.name for v in self.node.outputs if v.name]

    # -- traffic -------------------------------------------------------------------
    def reads(self, names: Iterable[str] | None = None) -> tuple[tuple[str, float], ...]:
        """Whole-tensor reads of ``names`` (default: every input given)."""
        chosen = [n for n in self.node.inputs if n] if names is None else list(names)
        return tuple((n, self.nbytes(n)) for n in dict.fromkeys(chosen))

    def writes(self, names: Iterable[str] | None = None) -> tuple[tuple[str, float], ...]:
        """Whole-tensor writes of ``names`` (default: every named output)."""
        chosen = self.used_outputs() if names is None else list(names)
        return tuple((n, self.nbytes(n)) for n in chosen)

    def work(self, flops: float = 0.0, transcendentals: float = 0.0,
             op_class: str = "elementwise", **fields: object) -> Work:
        """A ``Work`` reading every input and writing every output unless told otherwise."""
        if "reads" not in fields:  # not setdefault: the default must not be evaluated
            fields["reads"] = self.reads()
        if "writes" not in fields:
            fields["writes"] = self.writes()
        return Work(flops=float(flops), transcendentals=float(transcendentals),
                    op_class=op_class, **fields)  # type: ignore[arg-type]
