"""The roofline cost model: per kernel ``max(ops / peak[dtype], bytes / bandwidth)``
divided by the op class's efficiency on the target, plus the launch overhead.

Ops come from the rule table (``optc.cost.rules``), transcendental evaluations
weighted by the target's cost of one (``optc.cost.overrides``). The compute dtype
picks the peak (an int8 ``MatMulInteger`` uses the int8 figure). Fusion groups are
one kernel (``optc.cost.kernels``); NPU targets place nodes and price the transfers
(``optc.cost.devices``).

Where the target describes its last-level cache and ``cache_aware`` is on (default),
a kernel whose activations (reads + writes) fit in the cache moves them at cache
bandwidth, and weights do too when all the weights the device reads fit: the steady
state of repeated inference. Otherwise bytes move at memory bandwidth.

On the ``host`` target, element-wise ops join the kernel of the contraction or
element-wise op before them, as TVM compiles them (``optc.cost.overrides``). Kernels
too small for optc's schedules to parallelize are not priced on one core: on the
2-vCPU host the latency dataset was measured on, two threads run its models only
1.0-1.3x faster than one, so a serial kernel at half the 2-thread peak overestimates it.

Shapes must be static. Values ONNX shape inference leaves unsized are sized by one
run of the reference interpreter when the graph inputs are static (``run_for_shapes``,
``optc.cost.shapes``); a dimension still unknown is an error naming the node, never
a silent zero.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from types import MappingProxyType
from typing import ClassVar

from optc.cost.analysis import GraphFacts, Lookup
from optc.cost.devices import Device, fallback_device, main_device, place
from optc.cost.kernels import NodeTraffic, kernel_keys, node_traffic
from optc.cost.overrides import BUILTIN, TargetOverrides, overrides_for, overrides_for_keys
from optc.cost.record import Breakdown, Cost, NodeCost
from optc.cost.rules import RULES, Rule
from optc.cost.shapes import complete_shapes
from optc.ir.graph import Graph
from optc.target import Target

VERSION = 2
"""Bumped whenever a rule or the timing changes: part of ``uuid()``."""


@dataclasses.dataclass(frozen=True)
class RooflineModel:
    """Roofline latency prediction.

    ``fold_constants``: nodes computed from constants only are free (compiled away).
    ``cache_aware``: use the target's cache figures where the data fits.
    ``efficiency``: per op class fractions of the roofline, over the target's own.
    ``overrides``: per target name / TVM kind differences (``optc.cost.overrides``).
    ``run_for_shapes``: size values shape inference left unknown by running the graph.
    """

    name: ClassVar[str] = "roofline"
    fold_constants: bool = True
    cache_aware: bool = True
    efficiency: Mapping[str, float] = dataclasses.field(
        default_factory=lambda: MappingProxyType({}))
    overrides: Mapping[str, TargetOverrides] = dataclasses.field(default_factory=lambda: BUILTIN)
    run_for_shapes: bool = True

    def uuid(self) -> str:
        """A stable id of this model and its parameters (target figures not included:
        combine with ``Target.digest()`` and ``Graph.structural_hash()`` for a cache key)."""
        params = {"version": VERSION, "fold_constants": self.fold_constants,
                  "cache_aware": self.cache_aware, "efficiency": dict(self.efficiency),
                  "run_for_shapes": self.run_for_shapes,
                  "overrides": {k: v.describe() for k, v in sorted(self.overrides.items())}}
        text = json.dumps(params, sort_keys=True)
        return f"{self.name}-{hashlib.sha256(text.encode()).hexdigest()[:16]}"

    def estimate(self, graph: Graph, target: Target) -> Cost:
        return self.breakdown(graph, target).total

    def breakdown(self, graph: Graph, target: Target) -> Breakdown:
        """Per-node costs in graph order; their sum is the total."""
        if self.run_for_shapes:
            graph = complete_shapes(graph)
        return _Pricing(self, target).price(graph, None)


class _Pricing:
    """One model applied to one target (devices and overrides resolved once)."""

    def __init__(self, model: RooflineModel, target: Target) -> None:
        self.model = model
        overrides = overrides_for(target, model.overrides)
        self.overrides = overrides
        self.rules: Mapping[str, Rule] = {**RULES, **overrides.rules}
        self.main = main_device(target, overrides, model.efficiency)
        # The fallback is a CPU: it takes the LLVM kind's overrides, not the target's.
        self.fallback = fallback_device(target, overrides_for_keys(("llvm",), model.overrides))
        self.link = None if target.fallback is None else (
            target.fallback_figure("link_bandwidth"), target.fallback_figure("link_latency"))
        self.target = target

    def devices(self) -> dict[str, Device]:
        found = {self.main.label: self.main}
        if self.fallback is not None:
            found[self.fallback.label] = self.fallback
        return found

    def price(self, graph: Graph, outer: Lookup | None) -> Breakdown:
        facts = GraphFacts(graph, self.rules, self.model.fold_constants, self._body, outer)
        placement = place(facts, self.target, self.main, self.fallback)
        keys = kernel_keys(facts, placement, self.overrides, self.main.label)
        traffic = node_traffic(facts, placement, keys, transfers=self.fallback is not None)
        rows = self._rows(facts, placement, keys, traffic)
        return Breakdown(tuple(rows), sum((r.cost() for r in rows), Cost()))

    def _body(self, body: Graph, outer: Lookup) -> Cost:
        return self.price(body, outer).total

    def _rows(self, facts: GraphFacts, placement: list[str | None], keys: list[str | None],
              traffic: list[NodeTraffic]) -> list[NodeCost]:
        devices = self.devices()
        weights = self._resident_weights(placement, traffic)
        members: dict[str, list[int]] = {}
        for index, key in enumerate(keys):
            if key is not None:
                members.setdefault(key, []).append(index)
        rows: list[NodeCost | None] = [None] * len(facts.facts)
        for key, indices in members.items():
            device = devices[str(placement[indices[0]])]
            for index, row in zip(indices, self._kernel(
                    facts, indices, key, device, traffic, weights[device.label]), strict=True):
                rows[index] = row
        return [row or _free_row(facts, i, placement[i]) for i, row in enumerate(rows)]

    def _resident_weights(self, placement: list[str | None], traffic: list[NodeTraffic],
                          ) -> dict[str, bool]:
        """Per device: whether every weight it reads fits in its cache together."""
        resident = {}
        for label, device in self.devices().items():
            total = sum(t.param_bytes for t, p in zip(traffic, placement, strict=True)
                        if p == label)
            resident[label] = bool(self.model.cache_aware and device.cache
                                   and total <= device.cache[0])
        return resident

    def _kernel(self, facts: GraphFacts, indices: list[int], key: str, device: Device,
                traffic: list[NodeTraffic], weights_cached: bool) -> list[NodeCost]:
        works = [facts.facts[i].work for i in indices]
        activations = sum(traffic[i].activation_bytes for i in indices)
        act_bw = self._bandwidth(device, activations)
        param_bw = device.cache[1] if weights_cached and device.cache else device.bandwidth
        computes, memories = [], []
        for index, work in zip(indices, works, strict=True):
            assert work is not None  # kernels have works
            _, peak = device.peak_for(facts.facts[index].dtype)
            ops = work.flops + work.transcendentals * device.transcendental_flops
            computes.append(ops / peak)
            memories.append(traffic[index].activation_bytes / act_bw
                            + traffic[index].param_bytes / param_bw)
        return _split(facts, indices, key, device, traffic, computes, memories, self.link)

    def _bandwidth(self, device: Device, activation_bytes: float) -> float:
        if self.model.cache_aware and device.cache and activation_bytes <= device.cache[0]:
            return device.cache[1]
        return device.bandwidth


def _split(facts: GraphFacts, indices: list[int], key: str, device: Device,
           traffic: list[NodeTraffic], computes: list[float], memories: list[float],
           link: tuple[float, float] | None) -> list[NodeCost]:
    """The kernel's time, shared among its nodes by their own roofline terms."""
    compute, memory = sum(computes), sum(memories)
    roofs = [max(c, m) for c, m in zip(computes, memories, strict=True)]
    dominant = indices[roofs.index(max(roofs))]
    work = facts.facts[dominant].work
    assert work is not None
    busy = max(compute, memory) / device.efficiency.get(work.op_class, 1.0)
    bound = "launch" if device.launch > busy else "compute" if compute >= memory else "memory"
    total_roof = sum(roofs)
    rows = []
    for position, index in enumerate(indices):
        fact, moved = facts.facts[index], traffic[index]
        work = fact.work
        assert work is not None
        share = roofs[position] / total_roof if total_roof else 1 / len(indices)
        link_s = _link_seconds(moved, link)
        nested = work.nested if isinstance(work.nested, Cost) else None
        launch = device.launch if position == 0 and nested is None else 0.0
        latency = busy * share + launch + link_s + (nested.latency_s if nested else 0.0)
        rows.append(NodeCost(
            name=fact.node.name, op=fact.node.op, kernel=key, device=device.label,
            dtype=device.peak_for(fact.dtype)[0], op_class=work.op_class,
            flops=work.flops + work.transcendentals + (nested.flops if nested else 0.0),
            transcendentals=work.transcendentals,
            bytes=moved.activation_bytes + moved.param_bytes + (nested.bytes if nested else 0),
            compute_s=computes[position], memory_s=memories[position], launch_s=launch,
            transfer_bytes=moved.transfer_bytes, transfer_s=link_s, latency_s=latency,
            launches=int(launch > 0) + (nested.launches if nested else 0), bound=bound))
    return rows


def _link_seconds(moved: NodeTraffic, link: tuple[float, float] | None) -> float:
    """Transfers between accelerator and CPU: bytes over the link plus a latency each."""
    if link is None or not moved.transfers:
        return 0.0
    bandwidth, latency = link
    return moved.transfer_bytes / bandwidth + moved.transfers * latency


def _free_row(facts: GraphFacts, index: int, device: str | None) -> NodeCost:
    fact = facts.facts[index]
    bound = "folded" if fact.work is None else "free"
    return NodeCost(
        name=fact.node.name, op=fact.node.op, kernel="", device=device or "", dtype=fact.dtype,
        op_class=fact.work.op_class if fact.work else "data", flops=0.0, transcendentals=0.0,
        bytes=0.0, compute_s=0.0, memory_s=0.0, launch_s=0.0, transfer_bytes=0.0,
        transfer_s=0.0, latency_s=0.0, launches=0, bound=bound)

