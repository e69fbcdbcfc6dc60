"""Structural hash of a graph: the key for cost and measurement caches."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from optc.ir.graph import Graph


def compute_structural_hash(graph: Graph) -> str:
    """SHA-256 of the canonical text with every tensor replaced by its content digest.

    Two graphs hash equal exactly when they print equal, i.e. when they have the same
    ops, wiring, types, attributes, annotations and tensor contents.
    """
    from optc.ir.text_print import print_graph

    return hashlib.sha256(print_graph(graph, inline_limit=0).encode()).hexdigest()


def structurally_equal(a: Graph, b: Graph) -> bool:
    return a is b or a.structural_hash() == b.structural_hash()
