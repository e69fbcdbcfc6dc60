"""The units a target's nodes run on, and which node runs where.

Most targets are one device. An accelerator with ``supported_ops`` has two: the
accelerator and its fallback CPU. A node runs on the accelerator when the accelerator
supports its op and either computes in one of its dtypes or sits in a region the
accelerator already runs (all its activation inputs come from accelerator nodes: the
float ops between DequantizeLinear and QuantizeLinear of a QDQ model). Views stay
with the memory they alias; graph inputs and outputs live on the CPU.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Mapping, Sequence
from types import MappingProxyType

from optc.cost.analysis import GraphFacts
from optc.cost.overrides import DEFAULT_TRANSCENDENTAL_FLOPS, TargetOverrides
from optc.ir.graph import Node
from optc.target import Target

GPU_KINDS = frozenset({"cuda", "rocm", "vulkan", "metal", "opencl", "webgpu"})
HOST = "cpu"
"""Where graph inputs come from and outputs go: the CPU running the program."""

_NARROW_INTS = ("uint8", "int4", "uint4", "int2", "uint2")


@dataclasses.dataclass(frozen=True)
class Device:
    """The figures of one compute unit, all known (no pending figure)."""

    label: str
    peaks: Mapping[str, float]
    bandwidth: float
    launch: float
    cache: tuple[float, float] | None
    efficiency: Mapping[str, float]
    transcendental_flops: float

    def peak_for(self, dtype: str) -> tuple[str, float]:
        """``(figure used, operations per second)`` for compute in ``dtype``.

        Narrow integers use the int8 figure (they are widened to it); a dtype without
        a figure uses float32 (a CPU upcasts; element-wise int64 runs on the same
        vector units); an int8-only accelerator uses its own first figure.
        """
        if dtype in self.peaks:
            return dtype, self.peaks[dtype]
        if dtype in _NARROW_INTS and "int8" in self.peaks:
            return "int8", self.peaks["int8"]
        key = "float32" if "float32" in self.peaks else next(iter(self.peaks))
        return key, self.peaks[key]

    def computes(self, dtype: str) -> bool:
        return computes(self.peaks, dtype)


def computes(dtypes: Collection[str], dtype: str) -> bool:
    """Whether a unit with peak figures for ``dtypes`` computes in ``dtype`` natively.

    Narrow integers count as int8 (they are widened to it). Shared with the NPU
    partitioner (``optc.codegen.npu``) so that code generation and the roofline put the
    same nodes on the accelerator.
    """
    return dtype in dtypes or (dtype in _NARROW_INTS and "int8" in dtypes)


def accelerated(supported: bool, native_dtype: bool, activations_on_accelerator: Sequence[bool],
                ) -> bool:
    """The placement rule for an accelerator with a fallback CPU, shared with codegen.

    A node runs on the accelerator when the accelerator supports its op and either
    computes in one of its dtypes or sits in a region the accelerator already runs
    (every activation input comes from the accelerator: the float ops between
    DequantizeLinear and QuantizeLinear of a QDQ model).
    """
    if not supported:
        return False
    if native_dtype:
        return True
    return bool(activations_on_accelerator) and all(activations_on_accelerator)


def main_device(target: Target, overrides: TargetOverrides,
                efficiency: Mapping[str, float]) -> Device:
    """The target's own unit, with its known figures (pending ones raise)."""
    label = "npu" if target.fallback is not None else (
        "gpu" if target.kind in GPU_KINDS else "cpu")
    peaks = {d: target.peak(d) for d in target.peak_flops}
    return Device(label, MappingProxyType(peaks), target.bandwidth(),
                  target.kernel_launch_overhead(), target.cache(),
                  MappingProxyType({**target.efficiency, **efficiency}),
                  _transcendental(overrides))


def fallback_device(target: Target, overrides: TargetOverrides) -> Device | None:
    """The CPU running what an accelerator cannot (no cache model, roofline efficiency)."""
    if target.fallback is None:
        return None
    peaks = {d: target.fallback_figure(f"peak_flops.{d}") for d in target.fallback.peak_flops}
    return Device(HOST, MappingProxyType(peaks), target.fallback_figure("memory_bandwidth"),
                  target.fallback_figure("launch_overhead"), None, MappingProxyType({}),
                  _transcendental(overrides))


def _transcendental(overrides: TargetOverrides) -> float:
    value = overrides.transcendental_flops
    return DEFAULT_TRANSCENDENTAL_FLOPS if value is None else value


def place(facts: GraphFacts, target: Target, main: Device, fallback: Device | None,
          ) -> list[str | None]:
    """The device label of each node (None: folded or a shape query, placed nowhere)."""
    placement: list[str | None] = []
    where: dict[str, str] = {}  # root value -> device holding it

    def home(name: str) -> str:
        return where.get(facts.root(name), HOST)

    for fact in facts.facts:
        work = fact.work
        if work is None or work.kind == "meta":
            device = None
        elif fallback is None:
            device = main.label
        elif work.kind == "view":
            device = home(fact.node.inputs[0]) if fact.node.inputs else HOST
        else:
            device = _accelerated(fact.node, fact.dtype, facts, target, main, home)
        placement.append(device)
        if device is not None:
            for out in fact.node.output_names:
                if out and facts.root(out) == out:
                    where[out] = device
    return placement


def _accelerated(node: Node, dtype: str, facts: GraphFacts, target: Target, main: Device,
                 home: Callable[[str], str]) -> str:
    activations = [n for n in node.inputs if n and facts.root(n) not in facts.constants]
    on_main = [home(n) == main.label for n in activations]
    return main.label if accelerated(target.runs(node.op), main.computes(dtype),
                                     on_main) else HOST
