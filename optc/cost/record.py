"""What cost models return: a ``Cost`` for a graph, a ``NodeCost`` row per node."""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

Bound = Literal["compute", "memory", "launch", "free", "folded"]
"""What limits a node: its arithmetic, its memory traffic, the fixed launch cost; or
nothing (``free``: a view or shape query; ``folded``: computed at compile time)."""


@dataclasses.dataclass(frozen=True)
class Cost:
    """Predicted cost of running a graph (or part of it) once.

    ``flops`` counts arithmetic operations (a multiply-add is 2), ``bytes`` the memory
    traffic, ``launches`` the kernels started, ``transfer_bytes`` / ``transfer_s`` the
    traffic between an accelerator and its fallback CPU. ``Cost()`` is zero, and
    ``sum(costs)`` works: ``0 + cost`` is ``cost``.
    """

    latency_s: float = 0.0
    flops: float = 0.0
    bytes: float = 0.0
    launches: int = 0
    transfer_bytes: float = 0.0
    transfer_s: float = 0.0

    def __add__(self, other: Cost) -> Cost:
        if not isinstance(other, Cost):
            return NotImplemented
        return Cost(*(a + b for a, b in zip(dataclasses.astuple(self),
                                            dataclasses.astuple(other), strict=True)))

    def __radd__(self, other: object) -> Cost:
        if other == 0:  # the start value of sum()
            return self
        if isinstance(other, Cost):
            return other + self
        return NotImplemented

    def scaled(self, factor: float) -> Cost:
        """The cost of running this ``factor`` times (a loop body)."""
        return Cost(self.latency_s * factor, self.flops * factor, self.bytes * factor,
                    round(self.launches * factor), self.transfer_bytes * factor,
                    self.transfer_s * factor)

    @property
    def intensity(self) -> float:
        """Arithmetic intensity, operations per byte moved (inf when nothing moves)."""
        return self.flops / self.bytes if self.bytes else float("inf") if self.flops else 0.0

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class NodeCost:
    """One node's share of the prediction, as ``optc profile`` shows it.

    ``flops`` counts arithmetic operations with each transcendental evaluation as one
    (``transcendentals`` says how many of them were; the model prices them higher).
    ``kernel`` names the kernel the node runs in (its fusion group, or itself);
    ``device`` the unit running it (``cpu``, ``gpu``, ``npu``); ``dtype`` the compute
    dtype whose peak was used; ``op_class`` the efficiency class. ``compute_s`` and
    ``memory_s`` are the node's own roofline terms; ``latency_s`` its share of its
    kernel's time, launch overhead and transfers included, so that the rows add up
    to the total.
    """

    name: str
    op: str
    kernel: str
    device: str
    dtype: str
    op_class: str
    flops: float
    transcendentals: float
    bytes: float
    compute_s: float
    memory_s: float
    launch_s: float
    transfer_bytes: float
    transfer_s: float
    latency_s: float
    launches: int
    bound: Bound

    @property
    def intensity(self) -> float:
        return self.flops / self.bytes if self.bytes else float("inf") if self.flops else 0.0

    def cost(self) -> Cost:
        return Cost(self.latency_s, self.flops, self.bytes, self.launches,
                    self.transfer_bytes, self.transfer_s)

    def as_dict(self) -> dict[str, Any]:
        document = dataclasses.asdict(self)
        document["intensity"] = None if self.intensity == float("inf") else self.intensity
        return document


@dataclasses.dataclass(frozen=True)
class Breakdown:
    """Per-node costs of a graph, in graph order, and their total."""

    nodes: tuple[NodeCost, ...]
    total: Cost

    def top(self, count: int = 10) -> list[NodeCost]:
        """The ``count`` nodes with the largest predicted time, slowest first."""
        ranked = sorted(self.nodes, key=lambda n: n.latency_s, reverse=True)
        return [n for n in ranked[:count] if n.latency_s > 0]
