"""Typed annotations carried on IR values and nodes.

Quantization, routing and timestep facts travel *with* the graph as typed records
rather than in side tables, so an edit that copies a node keeps what was known about
it. Every annotation is a frozen dataclass with a ``kind`` used by the text form;
its fields must be ints, floats, strings, bools or tuples of those so the text form
can round-trip them.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar


@dataclasses.dataclass(frozen=True)
class Annotation:
    """Base class: subclass it with a frozen dataclass and set ``kind``."""

    kind: ClassVar[str] = ""

    def fields(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


@dataclasses.dataclass(frozen=True)
class Precision(Annotation):
    """Numeric precision chosen for a value or a node's weights (filled by quantization)."""

    kind: ClassVar[str] = "precision"
    bits: int
    dtype: str = "int"  # "int", "float", "bfloat"
    per_channel: bool = False


@dataclasses.dataclass(frozen=True)
class Routing(Annotation):
    """Marks a node as belonging to a skippable layer gated by a router."""

    kind: ClassVar[str] = "routing"
    layer: int
    router: str = ""


@dataclasses.dataclass(frozen=True)
class Timesteps(Annotation):
    """Number of simulation timesteps of a spiking layer."""

    kind: ClassVar[str] = "timesteps"
    steps: int


@dataclasses.dataclass(frozen=True)
class FusionGroup(Annotation):
    """Names the fused kernel a node was placed in."""

    kind: ClassVar[str] = "fusion"
    group: str


def annotation_types() -> dict[str, type[Annotation]]:
    """Every known annotation class by ``kind``, plugins' subclasses included."""
    found: dict[str, type[Annotation]] = {}
    pending: list[type[Annotation]] = [Annotation]
    while pending:
        cls = pending.pop()
        for sub in cls.__subclasses__():
            if sub.kind:
                found[sub.kind] = sub
            pending.append(sub)
    return found
