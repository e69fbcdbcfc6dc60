"""Targets: the hardware optc optimizes for, described as data in ``<name>.toml`` files.

A target file gives the TVM target (a JSON-style table; TVM 0.27 refuses target
strings), an optional TVM tag, the host triple and cross compiler for code generation,
the figures the roofline cost model needs (peak throughput per dtype, memory
bandwidth, kernel launch overhead, optionally the last-level cache), the dtypes the
device computes in, the default pass pipeline, and a ``[sources]`` table saying where
each figure comes from. The file format is checked in ``optc.target_file``.

A figure may be the string ``"measured"``: the device's own micro-benchmark supplies
it (the host CPU's peaks, for instance). Until then it is *pending*, never a guess;
``Target.peak()`` and friends refuse to return a pending figure. A target naming a
``calibration`` (the host) gets its measurements from a per-user cache, transparently
in ``load_targets()`` and, measuring on first use, in ``get_target()``.

An accelerator that runs only some ops (an NPU) lists them in ``supported_ops`` and
describes the CPU that runs the rest, and the link between the two, in ``fallback``.

Folders of target files are found through the ``optc.targets`` entry-point group, so
a third-party distribution ships targets exactly as optc ships its own.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, Literal

from optc.errors import PluginError, UnknownNameError, UserInputError
from optc.ir.dtypes import is_tensor_dtype
from optc.plugins import load_group

log = logging.getLogger(__name__)

MEASURED: Final = "measured"
"""A figure the device's micro-benchmark supplies; pending until it has run."""

Figure = float | Literal["measured"]

ENTRY_POINT_GROUP = "optc.targets"

COMPUTE_TYPES: Final = ("tfloat32",)
"""Peak-table keys that are compute precisions, not storage dtypes (TF32 tensor cores)."""

_SCALARS = ("memory_bandwidth", "launch_overhead", "cache_size", "cache_bandwidth")


@dataclasses.dataclass(frozen=True)
class Fallback:
    """The CPU that runs the ops an accelerator cannot, and the link between the two.

    ``link_bandwidth`` (bytes/s) and ``link_latency`` (s per transfer) price every
    tensor crossing between accelerator and CPU.
    """

    description: str
    peak_flops: Mapping[str, Figure] = dataclasses.field(hash=False)
    memory_bandwidth: Figure
    launch_overhead: Figure
    link_bandwidth: Figure
    link_latency: Figure

    def pending(self) -> tuple[str, ...]:
        keys = [f"fallback.peak_flops.{d}" for d, v in self.peak_flops.items() if v == MEASURED]
        keys += [f"fallback.{k}" for k in ("memory_bandwidth", "launch_overhead",
                                           "link_bandwidth", "link_latency")
                 if getattr(self, k) == MEASURED]
        return tuple(keys)


@dataclasses.dataclass(frozen=True)
class Target:
    """One target, as loaded from ``path``. Rates are per second; ``"measured"`` is pending.

    ``peak_flops`` holds dense peak operations per second per dtype (FLOP/s, or OP/s
    for integer types); ``peak_flops_sparse`` the 2:4 structured-sparsity peaks where
    the device has them. ``host_triple`` / ``cross_compiler`` are None when code runs
    on the machine optc runs on (no cross compilation). ``supported_ops`` is None when
    the device runs every op; otherwise the ops outside it run on ``fallback``.
    ``cache_size`` / ``cache_bandwidth`` describe the last-level cache (None: not
    modelled). ``efficiency`` maps op classes to the fraction of the roofline their
    kernels reach on this target (1 when absent). ``calibration`` names the
    micro-benchmark that measures the ``"measured"`` figures.
    """

    name: str
    description: str
    tvm_target_json: str
    tvm_tag: str | None
    host_triple: str | None
    cross_compiler: str | None
    # Mappings are left out of the hash (they are unhashable) but still compared.
    peak_flops: Mapping[str, Figure] = dataclasses.field(hash=False)
    peak_flops_sparse: Mapping[str, Figure] = dataclasses.field(hash=False)
    memory_bandwidth: Figure
    launch_overhead: Figure
    supported_dtypes: tuple[str, ...]
    default_pipeline: str
    sources: Mapping[str, str] = dataclasses.field(hash=False)
    path: Path
    distribution: str = ""
    tvm_byoc: str | None = None
    supported_ops: frozenset[str] | None = None
    fallback: Fallback | None = None
    cache_size: Figure | None = None
    cache_bandwidth: Figure | None = None
    efficiency: Mapping[str, float] = dataclasses.field(
        default_factory=lambda: MappingProxyType({}), hash=False)
    calibration: str | None = None

    @property
    def tvm_target_dict(self) -> dict[str, Any]:
        """The TVM target as a fresh JSON-style dict (a copy: the target stays immutable)."""
        return json.loads(self.tvm_target_json)

    @property
    def kind(self) -> str:
        """The TVM target kind: ``llvm`` for CPUs, ``cuda`` for NVIDIA GPUs, ..."""
        return str(self.tvm_target_dict["kind"])

    def tvm_target(self) -> Any:
        """A ``tvm.target.Target``; imports TVM (slow) only when asked."""
        import tvm.target  # deferred: TVM takes seconds to import

        try:
            return tvm.target.Target(self.tvm_target_dict)
        except ValueError as exc:
            raise UserInputError(f"{self.path}: [tvm] target is refused by TVM: "
                                 f"{str(exc).splitlines()[0]}") from exc

    def runs(self, op: str) -> bool:
        """Whether the device itself (not its fallback CPU) runs ``op``."""
        return self.supported_ops is None or op in self.supported_ops

    def pending_figures(self) -> tuple[str, ...]:
        """Keys of figures still waiting for a measurement, e.g. ``peak_flops.float32``."""
        pending = [f"{table}.{dtype}" for table in ("peak_flops", "peak_flops_sparse")
                   for dtype, value in getattr(self, table).items() if value == MEASURED]
        pending += [key for key in _SCALARS if getattr(self, key) == MEASURED]
        if self.fallback is not None:
            pending += self.fallback.pending()
        return tuple(pending)

    def with_measurements(self, figures: Mapping[str, float], source: str,
                          tvm_target: Mapping[str, Any] | None = None,
                          new_dtypes: bool = False) -> Target:
        """A copy with figures filled in by a measurement, keyed like ``pending_figures()``.

        ``source`` (e.g. "host micro-benchmark, 2025-01-31") replaces each figure's
        source. ``tvm_target`` replaces the TVM target (a detected CPU). With
        ``new_dtypes``, a ``peak_flops.<dtype>`` the file lacks adds that dtype (a CPU
        found to have bfloat16 units); otherwise it is an unknown figure.
        """
        peaks = dict(self.peak_flops)
        sparse = dict(self.peak_flops_sparse)
        scalars: dict[str, float] = {}
        dtypes = list(self.supported_dtypes)
        for key, value in figures.items():
            table, _, dtype = key.partition(".")
            if table == "peak_flops" and (dtype in peaks or (
                    new_dtypes and is_tensor_dtype(dtype))):
                peaks[dtype] = float(value)
                dtypes += [] if dtype in dtypes else [dtype]
            elif table == "peak_flops_sparse" and dtype in sparse:
                sparse[dtype] = float(value)
            elif key in _SCALARS and getattr(self, key) is not None:
                scalars[key] = float(value)
            else:
                raise UnknownNameError(f"target {self.name!r} has no figure {key!r}")
        sources = {**self.sources, **{key: source for key in figures}}
        tvm_json = self.tvm_target_json if tvm_target is None else json.dumps(
            dict(tvm_target), sort_keys=True)
        return dataclasses.replace(
            self, peak_flops=MappingProxyType(peaks), peak_flops_sparse=MappingProxyType(sparse),
            sources=MappingProxyType(sources), supported_dtypes=tuple(dtypes),
            tvm_target_json=tvm_json, **scalars)

    def with_efficiency(self, efficiency: Mapping[str, float], source: str) -> Target:
        """A copy whose per-op-class efficiencies are updated (a fit to measurements)."""
        from optc.target_file import check_efficiency

        merged = {**self.efficiency, **check_efficiency(dict(efficiency), self.name)}
        sources = {**self.sources, "efficiency": source}
        return dataclasses.replace(self, efficiency=MappingProxyType(merged),
                                   sources=MappingProxyType(sources))

    def peak(self, dtype: str, sparse: bool = False) -> float:
        """Peak operations per second for ``dtype``; errors when unknown or not measured."""
        table = self.peak_flops_sparse if sparse else self.peak_flops
        key = f"peak_flops{'_sparse' if sparse else ''}.{dtype}"
        if dtype not in table:
            raise UnknownNameError(f"target {self.name!r} has no {key} figure")
        return self._known(key, table[dtype])

    def bandwidth(self) -> float:
        """Memory bandwidth in bytes per second."""
        return self._known("memory_bandwidth", self.memory_bandwidth)

    def kernel_launch_overhead(self) -> float:
        """Fixed cost of one kernel launch, in seconds."""
        return self._known("launch_overhead", self.launch_overhead)

    def cache(self) -> tuple[float, float] | None:
        """``(size in bytes, bandwidth in bytes/s)`` of the last-level cache, if modelled."""
        if self.cache_size is None or self.cache_bandwidth is None:
            return None
        return (self._known("cache_size", self.cache_size),
                self._known("cache_bandwidth", self.cache_bandwidth))

    def fallback_figure(self, key: str) -> float:
        """A figure of the fallback CPU: ``memory_bandwidth``, ``peak_flops.float32``, ..."""
        if self.fallback is None:
            raise UnknownNameError(f"target {self.name!r} has no fallback device")
        table, _, dtype = key.partition(".")
        if table == "peak_flops":
            if dtype not in self.fallback.peak_flops:
                raise UnknownNameError(f"target {self.name!r} has no fallback.{key} figure")
            return self._known(f"fallback.{key}", self.fallback.peak_flops[dtype])
        return self._known(f"fallback.{key}", getattr(self.fallback, key))

    def digest(self) -> str:
        """A short hash of everything a cost model reads: a cache key part."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                  if f.name not in ("path", "distribution", "sources", "description")}
        text = json.dumps(fields, sort_keys=True, default=_jsonable)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def _known(self, key: str, value: Figure) -> float:
        if value == MEASURED:
            raise UserInputError(f"target {self.name!r}: {key} is not measured yet "
                                 "(the target's micro-benchmark has not been run)")
        return float(value)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, frozenset):
        return sorted(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    raise TypeError(f"cannot hash {type(value).__name__}")


def load_target_file(path: str | Path, distribution: str = "") -> Target:
    """Parse and validate one target file; any problem raises ``UserInputError``."""
    from optc.target_file import parse_target_file

    return parse_target_file(Path(path), distribution)


def target_dirs() -> dict[Path, str]:
    """Every folder registered under ``optc.targets``, mapped to its distribution."""
    dirs: dict[Path, str] = {}
    for plugin in load_group(ENTRY_POINT_GROUP).values():
        obj = plugin.obj() if callable(plugin.obj) else plugin.obj
        if not isinstance(obj, str | Path) or not Path(obj).is_dir():
            raise PluginError(f"{ENTRY_POINT_GROUP} plugin {plugin.name!r} from "
                              f"{plugin.distribution} gave {obj!r}, not a folder")
        dirs[Path(obj)] = plugin.distribution
    return dirs


def load_targets(dirs: Mapping[Path, str] | None = None,
                 cache_dir: Path | None = None) -> dict[str, Target]:
    """All targets by name, from ``dirs`` (folder -> distribution; default: the installed).

    Targets with a ``calibration`` get their cached measurements (from ``cache_dir``,
    default the per-user cache) where a cache entry exists; nothing is measured here.
    Two files claiming one name is an error naming both.
    """
    targets: dict[str, Target] = {}
    for folder, distribution in (target_dirs() if dirs is None else dirs).items():
        for path in sorted(folder.glob("*.toml")):
            target = load_target_file(path, distribution)
            first = targets.get(target.name)
            if first is not None:
                raise PluginError(f"target {target.name!r} is defined twice: {first.path} "
                                  f"({first.distribution}) and {path} ({distribution})")
            targets[target.name] = _cached(target, cache_dir)
            log.debug("target %s from %s (%s)", target.name, path, distribution)
    return dict(sorted(targets.items()))


def get_target(name: str, targets: Mapping[str, Target] | None = None, calibrate: bool = True,
               cache_dir: Path | None = None) -> Target:
    """The target called ``name``; an unknown name raises ``UnknownNameError`` with suggestions.

    With ``calibrate``, a target whose figures are still pending and which names a
    ``calibration`` is measured now (seconds, once: the result is cached).
    """
    targets = load_targets(cache_dir=cache_dir) if targets is None else targets
    if name not in targets:
        close = difflib.get_close_matches(name, list(targets), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        known = ", ".join(targets) or "none installed"
        raise UnknownNameError(f"unknown target {name!r}{hint} (known: {known})")
    target = targets[name]
    if calibrate and target.calibration and target.pending_figures():
        from optc.cost.calibration import calibrate_target  # deferred: imports torch

        target = calibrate_target(target, cache_dir=cache_dir)
    return target


def _cached(target: Target, cache_dir: Path | None) -> Target:
    if not target.calibration:
        return target
    from optc.cost.calibration import apply_cached  # deferred: optc.cost imports this module

    return apply_cached(target, cache_dir)
