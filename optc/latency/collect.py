"""``collect``: measure models on devices into a dataset file, resumably.

For each model every device is measured back to back (devices interleaved per model,
not one device after the other over all models), so a slow period of a shared machine
hits all devices of a few models rather than one device's whole column. After each
model the file is rewritten atomically: an interrupted collection loses at most the
model in flight, and running the same command again skips what is in the file.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from optc.ir import Graph
from optc.latency.arch import ArchSpec
from optc.latency.dataset import Sample, read_dataset, save_dataset
from optc.latency.devices import Device, Timer, summarize

log = logging.getLogger(__name__)

Model = ArchSpec | str
"""A generated spec, ``zoo:NAME``, or an ONNX file path."""
Progress = Callable[[str], None]
ROUNDS = 5


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on and with."""
    import onnxruntime
    import torch
    import tvm

    from optc.codegen.host_cpu import available_cores
    from optc.cost.calibration import cpu_flags, isa_flags

    cpu = next((line.split(":", 1)[1].strip() for line in _cpuinfo().splitlines()
                if line.startswith("model name")), platform.processor())
    # The SIMD flags tell a cloud VM's CPUs apart: "AMD EPYC" names a Zen 3 and a Zen 5.
    return {"cpu": cpu, "cores": available_cores(), "arch": platform.machine(),
            "isa": isa_flags(cpu_flags()),
            "python": platform.python_version(), "optc": _optc_version(),
            "tvm": tvm.__version__, "onnxruntime": onnxruntime.__version__,
            "torch": torch.__version__, "tvm_thread_pool": tvm_thread_pool()}


TVM_POOL_VARIABLES = ("TVM_NUM_THREADS", "TVM_BIND_THREADS", "TVM_THREAD_POOL_SPIN_COUNT")


def tvm_thread_pool() -> dict[str, str]:
    """How TVM's thread pool was configured (``runners.TvmBuilds`` sets the defaults; a
    collection may pin threads, ``TVM_BIND_THREADS=1``): part of what a TVM device is."""
    return {name: os.environ[name] for name in TVM_POOL_VARIABLES if name in os.environ}


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def _optc_version() -> str:
    import optc

    return optc.__version__


def model_key(model: Model) -> str:
    if isinstance(model, ArchSpec):
        return model.key()
    return model if model.startswith("zoo:") else str(Path(model).resolve())


def model_graph(model: Model) -> Graph:
    from optc.frontend import load_onnx
    from optc.latency.models import zoo_graph

    if isinstance(model, ArchSpec):
        return model.build()
    if model.startswith("zoo:"):
        return zoo_graph(model.removeprefix("zoo:"))
    return load_onnx(model)


def roofline_work(graph: Graph) -> tuple[float, float]:
    """The roofline model's flops and bytes for ``graph`` on the host target."""
    from optc.cost import RooflineModel
    from optc.target import get_target

    cost = RooflineModel().estimate(graph, get_target("host"))
    return cost.flops, cost.bytes


def collect(specs: Sequence[Model], devices: Sequence[Device], out: str | Path, repeat: int,
            progress: Progress | None = None, rounds: int = ROUNDS) -> list[Sample]:
    """Measure every model on every device into ``out``; rows already there are kept.

    Each device's ``repeat`` runs of a model are split into ``rounds`` rounds that cycle
    through the devices. A model that fails on a device (an op a runtime lacks) is
    logged and skipped for that device; the others still get their rows. Returns all
    samples of the file.
    """
    out = Path(out)
    head, samples = read_dataset(out) if out.exists() else ({}, [])
    done = {(s.model, s.device) for s in samples}
    machine = machine_info()
    earlier = head.get("machine", {})
    if samples and (earlier.get("cpu"), earlier.get("cores")) != (machine["cpu"],
                                                                   machine["cores"]):
        log.warning("%s was collected on %s (%s cores); this is %s (%s cores): local "
                    "devices of both machines share names", out, earlier.get("cpu"),
                    earlier.get("cores"), machine["cpu"], machine["cores"])
    say = progress or (lambda text: log.info("%s", text))
    started = time.perf_counter()
    for index, model in enumerate(specs, start=1):
        key = model_key(model)
        todo = [d for d in devices if (key, d.name) not in done]
        if not todo:
            continue
        graph = model_graph(model)
        flops, moved = roofline_work(graph)
        base = Sample(key, model.to_json() if isinstance(model, ArchSpec) else None,
                      graph.structural_hash(), "", 0.0, 0.0, 0, flops, moved)
        timings = measure_interleaved(todo, graph, repeat, rounds)
        rows = [dataclasses.replace(base, device=name, latency_s=t.median_s, p90_s=t.p90_s,
                                    repeats=t.runs, min_s=t.min_s)
                for name, t in timings.items()]
        samples += rows
        done |= {(row.model, row.device) for row in rows}
        save_dataset(out, samples, machine)
        text = " ".join(f"{r.device}={r.latency_s * 1e3:.2f}ms" for r in rows)
        say(f"[{index}/{len(specs)} {time.perf_counter() - started:.0f}s] {key} {text}")
    return samples


@dataclasses.dataclass(frozen=True)
class Measured:
    median_s: float
    p90_s: float
    runs: int
    min_s: float | None


def measure_interleaved(devices: Sequence[Device], graph: Graph, repeat: int,
                        rounds: int) -> dict[str, Measured]:
    """Each device's figures for ``graph``; devices without ``timer`` measure in one go."""
    # ``repeat`` runs split as evenly as possible over at most ``repeat`` rounds.
    shares = [n for i in range(rounds) if (n := repeat // rounds + (i < repeat % rounds))]
    timers: dict[str, Timer] = {}
    measured: dict[str, Measured] = {}
    for device in devices:
        label = f"{graph.name} on {device.name}"
        timer = getattr(device, "timer", None)
        if timer is not None:
            prepared = _guarded(label, lambda t=timer: t(graph))
            if prepared is not None:
                timers[device.name] = prepared
        elif (figures := _guarded(label, lambda d=device: d.measure(graph, repeat))):
            measured[device.name] = Measured(figures[0], figures[1], repeat, None)
    runs: dict[str, list[float]] = {name: [] for name in timers}
    for share in shares:
        for name, timer in list(timers.items()):
            got = _guarded(f"{graph.name} on {name}", lambda t=timer, n=share: t(n))
            if got is None:
                del timers[name], runs[name]
            else:
                runs[name] += got
    for name, values in runs.items():
        median, p90 = summarize(values)
        measured[name] = Measured(median, p90, len(values), min(values))
    return {d.name: measured[d.name] for d in devices if d.name in measured}


def _guarded(label: str, call: Callable[[], Any]) -> Any:
    try:
        return call()
    except Exception as exc:
        # One runtime's failure (onnxruntime raises its own exception types) must not end
        # an hour-long collection: it is logged, and the other devices keep their rows.
        text = str(exc).strip()
        log.warning("%s failed: %s", label, text.splitlines()[0][:200] if text else repr(exc))
        return None
