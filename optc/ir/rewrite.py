"""Small graph edits for passes: replace or remove nodes, rename uses, drop unused params.

Every helper is pure and keeps the IR's promise that an edit which changes nothing
returns the very same ``Graph`` object, so a pass built from these helpers reports
"unchanged" (``after is before``) without extra bookkeeping. The helpers do not verify
the result; run ``verify`` (tests do after every pass) to catch a broken edit.

    conv_bn = {bn_node: (fused_conv,), conv_node: ()}
    graph = replace_nodes(graph, conv_bn)           # fused conv takes the BN's place
    graph = drop_unused_params(graph)               # the BN's scale/bias go away
"""

from __future__ import annotations

import dataclasses
import heapq
from collections.abc import Iterable, Mapping, Sequence

from optc.ir.graph import Graph, Node, Value, node_reads, outer_reads


def replace_nodes(graph: Graph, replacements: Mapping[Node, Sequence[Node]]) -> Graph:
    """Put each key node's replacement sequence where the key stood (``()`` removes it).

    Nodes are matched by identity. The replacement nodes must be in a valid order among
    themselves; see ``sort_nodes`` when they read values defined further down.
    """
    if not replacements:
        return graph
    known = {id(node) for node in graph.nodes}
    missing = [node.op for node in replacements if id(node) not in known]
    if missing:
        raise ValueError(f"replace_nodes: {len(missing)} node(s) not in the graph: {missing}")
    nodes: list[Node] = []
    for node in graph.nodes:
        nodes.extend(replacements.get(node, (node,)))
    return graph.replace(nodes=tuple(nodes))


def remove_nodes(graph: Graph, nodes: Iterable[Node]) -> Graph:
    """The graph without ``nodes`` (by identity); readers of their outputs are not fixed."""
    return replace_nodes(graph, {node: () for node in nodes})


def rename_uses(graph: Graph, renames: Mapping[str, str], *, outputs: bool = False) -> Graph:
    """Make every reader of ``old`` read ``new`` instead, for each ``old -> new``.

    Node inputs and subgraph captures are rewritten. Graph outputs name the model's
    interface, so they are left alone unless ``outputs=True``, which makes the output
    the ``new`` value (name and type). Definitions are never renamed.
    """
    renames = {old: new for old, new in renames.items() if old != new}
    if not renames:
        return graph
    nodes = tuple(_rename_in_node(node, renames) for node in graph.nodes)
    new_outputs = graph.outputs
    if outputs:
        new_outputs = tuple(_retarget_output(graph, value, renames[value.name])
                            if value.name in renames else value for value in graph.outputs)
    return graph.replace(nodes=nodes, outputs=new_outputs)


def _retarget_output(graph: Graph, value: Value, new: str) -> Value:
    # A body's output may be an outer value, unknown to the body: keep the declared type.
    if graph.has_value(new):
        return graph.value(new)
    return dataclasses.replace(value, name=new)


def _rename_in_node(node: Node, renames: Mapping[str, str]) -> Node:
    inputs = tuple(renames.get(name, name) if name else name for name in node.inputs)
    attrs = node.attrs
    if any(True for _ in node.subgraphs()):
        attrs = {key: _rename_in_attr(value, renames) for key, value in node.attrs.items()}
    return node.replace(inputs=inputs, attrs=attrs)


def _rename_in_attr(value: object, renames: Mapping[str, str]) -> object:
    if isinstance(value, Graph):
        return _rename_captures(value, renames)
    if isinstance(value, tuple) and value and isinstance(value[0], Graph):
        return tuple(_rename_captures(sub, renames) for sub in value)
    return value


def _rename_captures(sub: Graph, renames: Mapping[str, str]) -> Graph:
    # Only names the body takes from outside are renamed; its own definitions stay.
    captured = {old: new for old, new in renames.items() if old in outer_reads(sub)}
    if not captured:
        return sub
    return rename_uses(sub, captured, outputs=True)


def drop_unused_params(graph: Graph) -> Graph:
    """The graph without parameters that no node, subgraph or graph output reads."""
    used = {name for node in graph.nodes for name in node_reads(node)}
    used.update(graph.output_names)
    unused = [name for name in graph.params if name not in used]
    if not unused:
        return graph
    return graph.replace(params={k: v for k, v in graph.params.items() if k in used})


def sort_nodes(graph: Graph) -> Graph:
    """Nodes in a topological order closest to the current one; ``graph`` if already so.

    Raises ``ValueError`` naming a node on a cycle if there is no such order.
    """
    producer = {out.name: i for i, node in enumerate(graph.nodes) for out in node.outputs
                if out.name}
    deps: list[set[int]] = [
        {producer[name] for name in node_reads(node) if name in producer}
        for node in graph.nodes]
    users: list[list[int]] = [[] for _ in graph.nodes]
    for i, needs in enumerate(deps):
        for j in needs:
            users[j].append(i)
    waiting = [len(needs) for needs in deps]
    ready = [i for i, count in enumerate(waiting) if count == 0]
    heapq.heapify(ready)
    order: list[int] = []
    while ready:  # Kahn's algorithm, always taking the earliest ready node (stable)
        i = heapq.heappop(ready)
        order.append(i)
        for user in users[i]:
            waiting[user] -= 1
            if waiting[user] == 0:
                heapq.heappush(ready, user)
    if len(order) != len(graph.nodes):
        stuck = next(i for i, count in enumerate(waiting) if count)
        raise ValueError(f"sort_nodes: node #{stuck} {graph.nodes[stuck].op} is on a cycle")
    return graph.replace(nodes=tuple(graph.nodes[i] for i in order))


def unique_name(graph: Graph, hint: str) -> str:
    """``hint``, or ``hint_1``, ``hint_2``... : a value name the graph does not use yet."""
    taken = all_names(graph)
    if hint not in taken:
        return hint
    suffix = 1
    while f"{hint}_{suffix}" in taken:
        suffix += 1
    return f"{hint}_{suffix}"


class NameSource:
    """Fresh value names for one edit: ``base``, then ``base2``, ``base3``... never a name the
    graph (its bodies included) or an earlier ``fresh`` call uses."""

    def __init__(self, graph: Graph) -> None:
        self.taken = all_names(graph)

    def fresh(self, base: str) -> str:
        name, index = base, 1
        while name in self.taken:
            index += 1
            name = f"{base}{index}"
        self.taken.add(name)
        return name


def all_names(graph: Graph) -> set[str]:
    """Every value name defined or read in ``graph`` and its bodies (taken for new names)."""
    # Subgraph names count too: ONNX forbids a body from reusing an outer name.
    names = set(graph.input_names) | set(graph.params)
    for node in graph.nodes:
        names.update(node.output_names)
        names.update(n for n in node.inputs if n)
        for sub in node.subgraphs():
            names |= all_names(sub)
    return names
