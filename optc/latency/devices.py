"""Devices: each a different latency function that can be measured from here.

A device takes a graph and returns the median and 90th percentile of ``repeat`` timed
runs after warm-up. What makes them different devices rather than noise: TVM code
compiled by optc, onnxruntime's kernels, and the reference interpreter's eager torch
ops have different per-op efficiencies and overheads; one vs two threads changes which
models scale; dynamic int8 onnxruntime changes the compute dtype. ``rpc:<key>`` is a
remote device behind TVM's RPC tracker (``optc.codegen.remote``).

Besides ``measure``, each device here offers ``timer(graph)``: a prepared, warmed-up
callable ``runs -> [seconds, ...]``. The collector uses it to spread one model's runs
over several rounds across devices, so a burst of load from another process on a
shared machine spoils a few samples of each device instead of all of one device's.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping
from typing import Protocol, runtime_checkable

import numpy as np

from optc.compiler.rpc import RpcTracker
from optc.errors import UserInputError
from optc.ir import Graph
from optc.latency.runners import (
    OrtRunner,
    TorchRunner,
    TvmBuilds,
    feeds_for,
    time_calls,
    time_rpc,
    time_tvm,
)

WARMUP = 2
Timer = Callable[[int], list[float]]
"""``timer(runs)``: seconds of each of ``runs`` timed runs of a prepared model."""


@runtime_checkable
class Device(Protocol):
    """Something that times graphs: ``measure(graph, repeat) -> (median_s, p90_s)``."""

    name: str

    def measure(self, graph: Graph, repeat: int) -> tuple[float, float]: ...


def summarize(samples: list[float]) -> tuple[float, float]:
    """Median and 90th percentile."""
    return statistics.median(samples), float(np.percentile(samples, 90))


class LocalDevice:
    """A device whose model is prepared once and then timed in as many rounds as wanted."""

    name: str

    def timer(self, graph: Graph) -> Timer:
        raise NotImplementedError

    def measure(self, graph: Graph, repeat: int) -> tuple[float, float]:
        return summarize(self.timer(graph)(repeat))


class TvmDevice(LocalDevice):
    """optc's TVM build for this CPU, run by the Relax VM on ``threads`` worker threads."""

    def __init__(self, threads: int, builds: TvmBuilds) -> None:
        self.name = f"tvm-{threads}t"
        self.threads = threads
        self.builds = builds

    def timer(self, graph: Graph) -> Timer:
        vm, feeds = self.builds.get(graph), feeds_for(graph)
        time_tvm(vm, feeds, self.threads, WARMUP)
        return lambda runs: time_tvm(vm, feeds, self.threads, runs)


class OrtDevice(LocalDevice):
    """onnxruntime's CPU provider with ``threads`` intra-op threads; ``int8``: dynamic
    quantization of the model's weights first (``quantize_dynamic``)."""

    def __init__(self, threads: int, int8: bool = False) -> None:
        self.name = f"ort-{'int8-' if int8 else ''}{threads}t"
        self.runner = OrtRunner(threads, int8)

    def timer(self, graph: Graph) -> Timer:
        call = self.runner.prepare(graph, feeds_for(graph))
        time_calls(call, WARMUP)
        return lambda runs: time_calls(call, runs)


class TorchDevice(LocalDevice):
    """optc's reference interpreter: eager torch ops, one Python step per node."""

    def __init__(self, threads: int) -> None:
        self.name = f"torch-{threads}t"
        self.runner = TorchRunner(threads)

    def timer(self, graph: Graph) -> Timer:
        call = self.runner.prepare(graph, feeds_for(graph))

        def timed(runs: int) -> list[float]:
            with self.runner.threads_set():
                return time_calls(call, runs)

        timed(WARMUP)
        return timed


class RpcDevice:
    """A remote device: compiled for ``target`` (an optc target name) and timed on the
    device registered under the tracker's key (one lease per model)."""

    def __init__(self, tracker: RpcTracker, target: str) -> None:
        self.name = f"rpc:{tracker.key}"
        self.tracker = tracker
        self.target = target

    def measure(self, graph: Graph, repeat: int) -> tuple[float, float]:
        return summarize(time_rpc(graph, self.target, self.tracker, repeat, WARMUP))


LOCAL_DEVICES = ("tvm-1t", "tvm-2t", "ort-1t", "ort-2t", "torch-1t", "torch-2t", "ort-int8-1t")


def make_devices(names: list[str], *, rpc: RpcTracker | None = None,
                 rpc_target: str = "host") -> list[Device]:
    """Devices by name (``LOCAL_DEVICES``, or ``rpc:<key>`` with ``rpc`` given)."""
    builds = TvmBuilds()  # tvm-1t and tvm-2t time the same compiled module
    factories: Mapping[str, Callable[[], Device]] = {
        "tvm-1t": lambda: TvmDevice(1, builds), "tvm-2t": lambda: TvmDevice(2, builds),
        "ort-1t": lambda: OrtDevice(1), "ort-2t": lambda: OrtDevice(2),
        "torch-1t": lambda: TorchDevice(1), "torch-2t": lambda: TorchDevice(2),
        "ort-int8-1t": lambda: OrtDevice(1, int8=True),
    }
    devices: list[Device] = []
    for name in names:
        if name.startswith("rpc:"):
            if rpc is None or name != f"rpc:{rpc.key}":
                raise UserInputError(f"device {name!r} needs --rpc-tracker and --rpc-key "
                                     f"{name[4:]!r}")
            devices.append(RpcDevice(rpc, rpc_target))
        elif name in factories:
            devices.append(factories[name]())
        else:
            raise UserInputError(f"unknown device {name!r} (known: {', '.join(LOCAL_DEVICES)}, "
                                 "rpc:<key>)")
    if len({d.name for d in devices}) != len(devices):
        raise UserInputError(f"a device is named twice in {', '.join(names)}")
    return devices
