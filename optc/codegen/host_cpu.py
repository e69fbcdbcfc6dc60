"""This machine's CPU as a TVM target: LLVM triple, ``mcpu``, SIMD features and cores.

TVM 0.27 refuses ``-mcpu=native``, so the host is described explicitly. LLVM names the
CPU (``znver4``, ``neoverse-n1``) and implies a feature set from that name; a virtual
machine may hide some of those features (AVX-512 masked by the hypervisor, say), and
code using them would die with SIGILL. The features the kernel reports in
``/proc/cpuinfo`` are therefore compared with LLVM's, and differences become ``mattr``
overrides. Only the SIMD / ISA features that change generated code are compared.
"""

from __future__ import annotations

import logging
import os
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

CPUINFO = Path("/proc/cpuinfo")

# LLVM feature name -> /proc/cpuinfo flags, any of which shows the feature is usable.
_X86_FEATURES: Mapping[str, tuple[str, ...]] = {
    "sse3": ("pni",), "ssse3": ("ssse3",), "sse4.1": ("sse4_1",), "sse4.2": ("sse4_2",),
    "avx": ("avx",), "avx2": ("avx2",), "fma": ("fma",), "f16c": ("f16c",),
    "bmi": ("bmi1",), "bmi2": ("bmi2",), "popcnt": ("popcnt",), "lzcnt": ("abm",),
    "avx512f": ("avx512f",), "avx512dq": ("avx512dq",), "avx512cd": ("avx512cd",),
    "avx512bw": ("avx512bw",), "avx512vl": ("avx512vl",), "avx512ifma": ("avx512ifma",),
    "avx512vbmi": ("avx512vbmi",), "avx512vbmi2": ("avx512_vbmi2",),
    "avx512vnni": ("avx512_vnni",), "avx512bitalg": ("avx512_bitalg",),
    "avx512vpopcntdq": ("avx512_vpopcntdq",), "avx512bf16": ("avx512_bf16",),
    "avx512fp16": ("avx512_fp16",), "avxvnni": ("avx_vnni",), "gfni": ("gfni",),
    "vaes": ("vaes",), "vpclmulqdq": ("vpclmulqdq",), "amx-tile": ("amx_tile",),
    "amx-int8": ("amx_int8",), "amx-bf16": ("amx_bf16",),
}
_AARCH64_FEATURES: Mapping[str, tuple[str, ...]] = {
    "neon": ("asimd",), "fullfp16": ("asimdhp", "fphp"), "dotprod": ("asimddp",),
    "rdm": ("asimdrdm",), "i8mm": ("i8mm",), "bf16": ("bf16",), "sve": ("sve",),
    "sve2": ("sve2",), "sme": ("sme",),
}
_FEATURES_BY_ARCH: Mapping[str, Mapping[str, tuple[str, ...]]] = {
    "x86_64": _X86_FEATURES, "aarch64": _AARCH64_FEATURES,
}
_ARCH_ALIASES: Mapping[str, str] = {"amd64": "x86_64", "arm64": "aarch64"}


def machine_arch() -> str:
    """This machine's architecture with LLVM's spelling (``x86_64``, ``aarch64``)."""
    machine = platform.machine().lower()
    return _ARCH_ALIASES.get(machine, machine)


def triple_arch(triple: str) -> str:
    """The architecture part of an LLVM triple (``aarch64-linux-gnu`` -> ``aarch64``)."""
    arch = triple.split("-", 1)[0].lower()
    return _ARCH_ALIASES.get(arch, arch)


def host_triple() -> str:
    """LLVM's triple for this machine, without a vendor part.

    TVM's wheel reports the triple of the toolchain it was built with
    (``x86_64-conda-linux-gnu``); the vendor is dropped so the triple matches the
    system cross compilers' naming (``x86_64-linux-gnu``).
    """
    from tvm.target import codegen  # deferred: importing TVM takes seconds

    parts = str(codegen.llvm_get_system_triple()).split("-")
    if len(parts) == 4:
        del parts[1]
    return "-".join(parts)


def available_cores() -> int:
    """CPUs this process may run on (affinity and cgroup cpusets respected)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


THREADS_ENV = "TVM_NUM_THREADS"


def size_thread_pool(cores: int | None = None) -> None:
    """Have TVM's CPU thread pool run ``cores`` threads (default: every core this process
    may run on), unless the user chose a count (``TVM_NUM_THREADS`` already set).

    TVM sizes its pool once, when a module first runs, from ``TVM_NUM_THREADS``, else from
    half the logical cores on x86 (it assumes two hyper-threads per core): one thread on a
    2-vCPU VM, where every parallel loop of optc's schedules then ran serially (ResNet-50
    on this Zen 3 VM: 114 ms on the default single thread, 57 ms on two). ``optc.codegen``
    calls this on import, before any TVM module runs; later calls cannot resize a pool
    that exists (``runtime.config_threadpool`` only lowers the count).
    """
    os.environ.setdefault(THREADS_ENV, str(cores or available_cores()))


def pool_threads() -> int:
    """Threads in TVM's CPU pool (creating the pool if it does not exist yet)."""
    import tvm

    return int(tvm.get_global_func("runtime.NumThreads")())


def cpu_flags() -> frozenset[str] | None:
    """The CPU feature flags the kernel reports; None where /proc/cpuinfo is unavailable."""
    try:
        text = CPUINFO.read_text()
    except OSError:
        return None
    return parse_cpu_flags(text)


def parse_cpu_flags(cpuinfo_text: str) -> frozenset[str] | None:
    """Flags of the first CPU in a /proc/cpuinfo text (``flags`` on x86, ``Features`` on Arm)."""
    for line in cpuinfo_text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            return frozenset(value.split())
    return None


def llvm_features(tvm_target: Mapping[str, Any]) -> frozenset[str]:
    """Features LLVM enables for an ``llvm`` target dict (``mcpu`` implied, ``mattr`` applied)."""
    import tvm
    from tvm.target import codegen

    return frozenset(str(f) for f in codegen.llvm_get_cpu_features(tvm.target.Target(
        dict(tvm_target))))


def mattr_overrides(arch: str, llvm: frozenset[str], flags: frozenset[str]) -> list[str]:
    """``mattr`` entries that make LLVM's feature set for ``arch`` agree with the CPU's flags."""
    table = _FEATURES_BY_ARCH.get(arch, {})
    overrides = []
    for feature, names in sorted(table.items()):
        present = any(name in flags for name in names)
        if feature in llvm and not present:
            overrides.append(f"-{feature}")
        elif present and feature not in llvm:
            overrides.append(f"+{feature}")
    return overrides


def host_target(num_cores: int | None = None) -> dict[str, Any]:
    """A TVM target dict for this machine's CPU, e.g.
    ``{"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "znver4", "num-cores": 2}``.
    """
    from tvm.target import codegen

    target: dict[str, Any] = {"kind": "llvm", "mtriple": host_triple(),
                              "mcpu": str(codegen.llvm_get_system_cpu()),
                              "num-cores": num_cores or available_cores()}
    flags = cpu_flags()
    if flags is not None:
        overrides = mattr_overrides(machine_arch(), llvm_features(target), flags)
        if overrides:
            log.info("host CPU %s: LLVM feature overrides %s", target["mcpu"], overrides)
            target["mattr"] = overrides
    return target


def missing_features(tvm_target: Mapping[str, Any]) -> list[str]:
    """ISA features code for ``tvm_target`` may use that this machine's CPU lacks.

    Empty when the target is for another architecture or the CPU's flags are unknown:
    only code that would run here is checked (it would otherwise die with SIGILL).
    """
    flags = cpu_flags()
    arch = triple_arch(str(tvm_target.get("mtriple") or host_triple()))
    if flags is None or arch != machine_arch():
        return []
    table = _FEATURES_BY_ARCH.get(arch, {})
    used = llvm_features(tvm_target)
    return sorted(f for f, names in table.items()
                  if f in used and not any(name in flags for name in names))
