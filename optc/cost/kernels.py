"""Kernels and their memory traffic.

Nodes sharing a ``FusionGroup`` annotation (on one device) are one kernel: it is
launched once, and a value it both produces and consumes entirely (and which is no
graph output) never reaches memory. A target's ``absorb`` override joins an
activation to the kernel producing its input the same way. Every other kernel node
is a kernel of its own. A kernel reads each outside value once, however many of its
nodes read it. Outputs nobody reads are not written (the compiler drops them).

Between an accelerator and its fallback CPU, each value is transferred once per
destination device; graph inputs start on the CPU and outputs end there.
"""

from __future__ import annotations

import dataclasses

from optc.cost.analysis import GraphFacts
from optc.cost.devices import HOST
from optc.cost.overrides import TargetOverrides
from optc.ir.annotations import FusionGroup


@dataclasses.dataclass
class NodeTraffic:
    """Bytes a node moves, split by where they come from."""

    activation_bytes: float = 0.0
    param_bytes: float = 0.0
    transfer_bytes: float = 0.0
    transfers: int = 0


def kernel_keys(facts: GraphFacts, placement: list[str | None], overrides: TargetOverrides,
                absorb_device: str) -> list[str | None]:
    """The kernel each node runs in (None for folded nodes, views and shape queries)."""
    keys: list[str | None] = []
    by_output: dict[str, str] = {}  # value -> key of the kernel producing it
    for index, fact in enumerate(facts.facts):
        node, device = fact.node, placement[index]
        if fact.work is None or fact.work.kind != "kernel" or device is None:
            keys.append(None)
            continue
        group = next((a.group for a in node.annotations if isinstance(a, FusionGroup)), None)
        key = f"{group}@{device}" if group else f"{node.name or node.op}#{index}"
        if not group and device == absorb_device:
            key = _absorbing_kernel(facts, index, overrides, by_output) or key
        keys.append(key)
        for out in node.output_names:
            by_output[out] = key
    return keys


def _absorbing_kernel(facts: GraphFacts, index: int, overrides: TargetOverrides,
                      by_output: dict[str, str]) -> str | None:
    node = facts.facts[index].node
    producers = overrides.absorb.get(node.op)
    if not producers or not node.inputs or not node.inputs[0]:
        return None
    source = facts.root(node.inputs[0])
    producer = facts.producer(source)
    sole_reader = facts.consumers.get(source, []) == [index]
    if producer is None or producer.op not in producers or not sole_reader:
        return None
    return by_output.get(source)


def node_traffic(facts: GraphFacts, placement: list[str | None], keys: list[str | None],
                 transfers: bool) -> list[NodeTraffic]:
    """Per node: the bytes its kernel moves on its behalf, and (with ``transfers``, for
    an accelerator with a fallback CPU) the tensors it ships across the link."""
    traffic = [NodeTraffic() for _ in facts.facts]
    produced_in = {out: keys[i] for i, f in enumerate(facts.facts) if keys[i]
                   for out in f.node.output_names}
    device_of = {out: placement[i] for i, f in enumerate(facts.facts) if keys[i]
                 for out in f.node.output_names}
    read_by_kernel: set[tuple[str, str]] = set()
    moved: set[tuple[str, str]] = set()
    for index, fact in enumerate(facts.facts):
        key = keys[index]
        if key is None or fact.work is None:
            continue
        record = traffic[index]
        for name, size in fact.work.reads:
            root = facts.root(name)
            if produced_in.get(root) == key or (root, key) in read_by_kernel:
                continue  # stays inside the kernel, or the kernel already read it
            read_by_kernel.add((root, key))
            if root in facts.constants:
                record.param_bytes += size
                continue
            record.activation_bytes += size
            source = device_of.get(root, HOST)
            if transfers and source != placement[index] and (root, placement[index]) not in moved:
                moved.add((root, str(placement[index])))
                record.transfer_bytes += _full_bytes(facts, index, root)
                record.transfers += 1
        for name, size in fact.work.writes:
            if _escapes(facts, name, key, keys):
                record.activation_bytes += size
                if transfers and name in facts.output_roots and placement[index] != HOST:
                    record.transfer_bytes += size
                    record.transfers += 1
    return traffic


def _escapes(facts: GraphFacts, name: str, key: str, keys: list[str | None]) -> bool:
    """Whether ``name`` must be written to memory: read outside its kernel, or an output."""
    if name in facts.output_roots:
        return True
    readers = facts.consumers.get(name, [])
    return any(keys[i] != key for i in readers)


def _full_bytes(facts: GraphFacts, index: int, root: str) -> float:
    """The size of a whole transferred tensor (a slice still ships its source)."""
    return facts.view(facts.facts[index].node).nbytes(root)
