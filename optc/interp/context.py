"""What a rule sees: the node, its input tensors, its opset, and small accessors."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from optc.errors import InvalidModelError
from optc.ir.graph import Graph, Node

SubgraphRunner = Callable[[Graph, Mapping[str, torch.Tensor]], list[torch.Tensor]]
"""Runs a control-flow body given its inputs by name; the outer scope is captured."""

Rule = Callable[["RuleCall"], Sequence[torch.Tensor | None]]
"""A rule returns one tensor per node output (None for an optional output not made)."""


@dataclasses.dataclass(frozen=True)
class RuleCall:
    """One node about to be evaluated.

    ``opset`` is the version of the default ONNX domain: many ops changed meaning
    across versions (axes moved from attributes to inputs, defaults changed) and the
    rules branch on it.
    """

    node: Node
    inputs: Sequence[torch.Tensor | None]
    opset: int
    run_subgraph: SubgraphRunner | None = None

    def attr(self, key: str, default: Any = None) -> Any:
        return self.node.attrs.get(key, default)

    def input(self, index: int) -> torch.Tensor | None:
        """Input ``index``, or None when it is omitted ('' in the node) or absent."""
        return self.inputs[index] if index < len(self.inputs) else None

    def x(self, index: int = 0) -> torch.Tensor:
        """A required input; a missing one is a malformed model."""
        tensor = self.input(index)
        if tensor is None:
            raise InvalidModelError(
                f"{self.node.op} node {self.node.name!r}: required input {index} is missing")
        return tensor

    def ints(self, index: int) -> list[int] | None:
        """An input read as a list of Python ints (shapes, axes, pads); None if omitted."""
        tensor = self.input(index)
        return None if tensor is None else [int(v) for v in tensor.reshape(-1).tolist()]

    def scalar(self, index: int) -> float | int | bool | None:
        """A one-element input as a Python number; None if omitted."""
        tensor = self.input(index)
        return None if tensor is None else tensor.reshape(-1)[0].item()

    def int_scalar(self, index: int) -> int:
        """A required one-element input (an axis, a depth, a k) as a Python int."""
        return int(self.x(index).reshape(-1)[0].item())

    def wants(self, index: int) -> bool:
        """Whether output ``index`` exists and is named (optional outputs may be '')."""
        outputs = self.node.outputs
        return index < len(outputs) and outputs[index].name != ""

    @property
    def n_outputs(self) -> int:
        return len(self.node.outputs)

    def fail(self, message: str) -> InvalidModelError:
        """An error naming the node, for a model the rule cannot make sense of."""
        return InvalidModelError(f"{self.node.op} node {self.node.name!r}: {message}")
