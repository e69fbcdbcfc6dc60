"""optc's graph IR: immutable ``Graph`` / ``Node`` / ``Value``, verifier, text form.

Edit helpers for passes live in ``optc.ir.rewrite``; dtype names in ``optc.ir.dtypes``.
"""

from optc.ir.annotations import Annotation, FusionGroup, Precision, Routing, Timesteps
from optc.ir.graph import Dim, Graph, Node, Shape, TypeAttr, Value, node_reads, outer_reads
from optc.ir.hashing import structurally_equal
from optc.ir.nx_view import to_networkx
from optc.ir.text_parse import parse_graph
from optc.ir.text_print import print_graph, tensor_store
from optc.ir.verify import IRVerificationError, verify

__all__ = [
    "Annotation", "Dim", "FusionGroup", "Graph", "IRVerificationError", "Node", "Precision",
    "Routing", "Shape", "Timesteps", "TypeAttr", "Value", "node_reads", "outer_reads",
    "parse_graph", "print_graph", "structurally_equal", "tensor_store", "to_networkx", "verify",
]
