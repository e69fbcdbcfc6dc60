"""Time a compiled model: warm-up, then ``repeat`` timed runs; median and p90.

Timing uses TVM's ``time_evaluator`` on the VM's stateful entry point
(``set_input`` once, then ``invoke_stateful("main")``). The timing loop then runs in
C++ next to the model, on the device itself when it is remote, so neither Python call
overhead, input copies, nor RPC round trips are counted, and local and remote numbers
are taken the same way. Each repeat is one sample (``number`` calls averaged), so the
median and 90th percentile come from individual runs.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from optc.codegen.artifact import LoadedArtifact
from optc.codegen.run import device_tensors, outputs_to_numpy
from optc.codegen.signature import TensorSpec, example_feeds
from optc.errors import UserInputError


@dataclasses.dataclass(frozen=True)
class Timing:
    """Latency samples in seconds (each the mean of ``number`` calls) and where they came from."""

    samples_s: tuple[float, ...]
    warmup: int
    number: int
    where: str

    @property
    def median_s(self) -> float:
        return statistics.median(self.samples_s)

    @property
    def p90_s(self) -> float:
        return float(np.percentile(self.samples_s, 90))

    @property
    def min_s(self) -> float:
        return min(self.samples_s)

    @property
    def mean_s(self) -> float:
        return statistics.fmean(self.samples_s)

    def to_json(self) -> dict[str, Any]:
        return {"median_s": self.median_s, "p90_s": self.p90_s, "min_s": self.min_s,
                "mean_s": self.mean_s, "samples_s": list(self.samples_s),
                "warmup": self.warmup, "number": self.number, "where": self.where}


def check_counts(warmup: int, repeat: int, number: int) -> None:
    if warmup < 1 or repeat < 1 or number < 1:
        raise UserInputError(f"warmup, repeat and number must be at least 1 "
                             f"(got {warmup}, {repeat}, {number})")


def time_vm(vm: Any, device: Any, args: Sequence[Any], *, warmup: int, repeat: int,
            number: int, where: str) -> Timing:
    """Time ``vm``'s ``main`` on ``args`` (tensors already on ``device``)."""
    check_counts(warmup, repeat, number)
    vm.set_input("main", *args)
    # time_evaluator discards one call of its own; the other warm-up calls happen here.
    for _ in range(warmup - 1):
        vm.invoke_stateful("main")
    timer = vm.time_evaluator("invoke_stateful", device, number=number, repeat=repeat)
    result = timer("main")
    return Timing(tuple(float(s) for s in result.results), warmup, number, where)


def last_outputs(vm: Any, outputs: Sequence[TensorSpec]) -> dict[str, np.ndarray]:
    """The outputs of the VM's last stateful call of ``main``."""
    return outputs_to_numpy(outputs, vm.get_outputs("main"))


def measure(artifact: LoadedArtifact, feeds: Mapping[str, Any] | None = None, *,
            warmup: int = 1, repeat: int = 10, number: int = 1) -> Timing:
    """Time ``artifact`` here; ``feeds`` default to a deterministic ramp (``example_feeds``)."""
    inputs = artifact.manifest.inputs
    args = device_tensors(inputs, feeds if feeds is not None else example_feeds(inputs),
                          artifact.device)
    return time_vm(artifact.vm, artifact.device, args, warmup=warmup, repeat=repeat,
                   number=number, where=f"local {artifact.manifest.device}")
