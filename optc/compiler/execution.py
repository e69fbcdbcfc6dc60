"""Run a staged artifact once (for the output check) and time it: here, or on a remote
device through TVM's RPC tracker, in one session so the library is uploaded once."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from optc.compiler.rpc import RpcTracker

WARMUP = 1
"""Untimed runs before the timed ones, as ``optc.codegen.measure`` counts them (TVM's timer
discards one call of its own). In ``optc compile`` the output-check run comes first too,
so two runs warm caches and thread pools before the first timed one."""


@dataclasses.dataclass(frozen=True)
class Execution:
    """The outputs of one run on ``feeds`` and the timing samples that followed it."""

    outputs: dict[str, np.ndarray]
    timing: Any  # optc.codegen.Timing (not imported here: that imports TVM)


def why_not_here(artifact: Path) -> str | None:
    """Why the artifact cannot run on this machine, or None when it can."""
    import tvm

    from optc.codegen import read_manifest
    from optc.codegen.host_cpu import machine_arch, missing_features, triple_arch

    manifest = read_manifest(artifact)
    host = manifest.host_target
    arch = triple_arch(str(host.get("mtriple") or manifest.data["library_arch"]))
    remedy = "give --rpc-tracker/--rpc-key to run it on the device"
    if arch != machine_arch():
        return f"the library is for {arch} and this machine is {machine_arch()}; {remedy}"
    missing = missing_features(host)
    if missing:
        return f"the code uses CPU features this CPU lacks ({', '.join(missing)}); {remedy}"
    if manifest.device != "cuda":
        return None
    if not tvm.cuda(0).exist:
        return f"the kernels are CUDA and this machine has no CUDA GPU; {remedy}"
    return _gpu_mismatch(str(manifest.target.get("arch", "")), tvm.cuda(0).compute_version,
                         remedy)


def _gpu_mismatch(arch: str, compute_version: str, remedy: str) -> str | None:
    """Why kernels for ``arch`` (``sm_87``, ``sm_90a``) cannot run on this GPU, if they cannot.

    Plain PTX is compiled for newer GPUs by the driver; ``a`` (architecture-specific)
    kernels run only on their own architecture.
    """
    digits = arch.removeprefix("sm_").rstrip("a")
    if not digits.isdigit():
        return None
    wanted = (int(digits[:-1]), int(digits[-1]))
    major, _, minor = compute_version.partition(".")
    have = (int(major), int(minor or 0))
    if have < wanted or (arch.endswith("a") and have != wanted):
        return (f"the kernels are for {arch} and this GPU is sm_{have[0]}{have[1]}; {remedy}")
    return None


def run_and_time(artifact: Path, feeds: Mapping[str, np.ndarray], rpc: RpcTracker | None, *,
                 repeat: int, warmup: int = WARMUP) -> Execution:
    """Run ``artifact`` on ``feeds``, then time it (``warmup`` + ``repeat`` runs)."""
    if rpc is not None:
        return _remote(artifact, feeds, rpc, repeat=repeat, warmup=warmup)
    from optc.codegen import load_artifact, measure, run

    loaded = load_artifact(artifact)
    outputs = run(loaded, feeds)
    return Execution(outputs, measure(loaded, feeds, warmup=warmup, repeat=repeat))


def _remote(artifact: Path, feeds: Mapping[str, np.ndarray], rpc: RpcTracker, *, repeat: int,
            warmup: int) -> Execution:
    from optc.codegen.measure import check_counts, last_outputs, time_vm
    from optc.codegen.remote import remote_vm
    from optc.codegen.run import device_tensors

    check_counts(warmup, repeat, 1)
    with remote_vm(artifact, rpc.host, rpc.port, rpc.key) as (vm, device, manifest):
        args = device_tensors(manifest.inputs, feeds, device)
        vm.set_input("main", *args)
        vm.invoke_stateful("main")
        outputs = last_outputs(vm, manifest.outputs)
        timing = time_vm(vm, device, args, warmup=warmup, repeat=repeat, number=1,
                         where=f"rpc {rpc} {manifest.device}")
    return Execution(outputs, timing)


def time_artifact(artifact: Path, rpc: RpcTracker | None, *, repeat: int,
                  warmup: int = WARMUP) -> Any:
    """Timing of an existing artifact (hash-checked on load) on its example feeds."""
    from optc.codegen import load_artifact, measure, measure_remote

    if rpc is not None:
        return measure_remote(artifact, rpc.host, rpc.port, rpc.key, warmup=warmup,
                              repeat=repeat)
    return measure(load_artifact(artifact), warmup=warmup, repeat=repeat)
