"""Targets: the hardware optc optimizes for, described as data in ``<name>.toml`` files.

A target file gives the TVM target (a JSON-style table; TVM 0.27 refuses target
strings), an optional TVM tag, the host triple and cross compiler for code generation,
the figures the roofline cost model needs (peak throughput per dtype, memory
bandwidth, kernel launch overhead), the dtypes the device computes in, the default
pass pipeline, and a ``[sources]`` table saying where each figure comes from.

A figure may be the string ``"measured"``: the device's own micro-benchmark supplies
it (the host CPU's peaks, for instance). Until then it is *pending*, never a guess;
``Target.peak()`` and friends refuse to return a pending figure.

Folders of target files are found through the ``optc.targets`` entry-point group, so
a third-party distribution ships targets exactly as optc ships its own.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import logging
import math
import sys
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, Literal

from optc.errors import PluginError, UnknownNameError, UserInputError
from optc.ir.dtypes import is_tensor_dtype
from optc.plugins import load_group

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 has only the tomli backport
    import tomli as tomllib

log = logging.getLogger(__name__)

MEASURED: Final = "measured"
"""A figure the device's micro-benchmark supplies; pending until it has run."""

Figure = float | Literal["measured"]

ENTRY_POINT_GROUP = "optc.targets"

# Plausibility bounds catch unit slips (GB/s written where bytes/s is meant, µs for s).
_MIN_RATE = 1e6
_MAX_LAUNCH_OVERHEAD_S = 0.1

_REQUIRED = ("description", "tvm", "supported_dtypes", "peak_flops", "memory_bandwidth",
             "launch_overhead", "default_pipeline", "sources")
_OPTIONAL = ("name", "host_triple", "cross_compiler", "peak_flops_sparse")


@dataclasses.dataclass(frozen=True)
class Target:
    """One target, as loaded from ``path``. Rates are per second; ``"measured"`` is pending.

    ``peak_flops`` holds dense peak operations per second per dtype (FLOP/s, or OP/s
    for integer types); ``peak_flops_sparse`` the 2:4 structured-sparsity peaks where
    the device has them. ``host_triple`` / ``cross_compiler`` are None when code runs
    on the machine optc runs on (no cross compilation).
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

    @property
    def tvm_target_dict(self) -> dict[str, Any]:
        """The TVM target as a fresh JSON-style dict (a copy: the target stays immutable)."""
        return json.loads(self.tvm_target_json)

    def tvm_target(self) -> Any:
        """A ``tvm.target.Target``; imports TVM (slow) only when asked."""
        import tvm.target  # deferred: TVM takes seconds to import

        try:
            return tvm.target.Target(self.tvm_target_dict)
        except ValueError as exc:
            raise UserInputError(f"{self.path}: [tvm] target is refused by TVM: "
                                 f"{str(exc).splitlines()[0]}") from exc

    def pending_figures(self) -> tuple[str, ...]:
        """Keys of figures still waiting for a measurement, e.g. ``peak_flops.float32``."""
        pending = [f"{table}.{dtype}" for table in ("peak_flops", "peak_flops_sparse")
                   for dtype, value in getattr(self, table).items() if value == MEASURED]
        pending += [key for key in ("memory_bandwidth", "launch_overhead")
                    if getattr(self, key) == MEASURED]
        return tuple(pending)

    def with_measurements(self, figures: Mapping[str, float], source: str) -> Target:
        """A copy with figures filled in by a measurement, keyed like ``pending_figures()``.

        ``source`` (e.g. "host micro-benchmark, 2025-01-31") replaces each figure's source.
        """
        tables = {"peak_flops": dict(self.peak_flops),
                  "peak_flops_sparse": dict(self.peak_flops_sparse)}
        scalars: dict[str, float] = {}
        for key, value in figures.items():
            table, _, dtype = key.partition(".")
            if table in tables and dtype in tables[table]:
                tables[table][dtype] = float(value)
            elif key in ("memory_bandwidth", "launch_overhead"):
                scalars[key] = float(value)
            else:
                raise UnknownNameError(f"target {self.name!r} has no figure {key!r}")
        sources = {**self.sources, **{key: source for key in figures}}
        return dataclasses.replace(
            self, peak_flops=MappingProxyType(tables["peak_flops"]),
            peak_flops_sparse=MappingProxyType(tables["peak_flops_sparse"]),
            sources=MappingProxyType(sources), **scalars)

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

    def _known(self, key: str, value: Figure) -> float:
        if value == MEASURED:
            raise UserInputError(f"target {self.name!r}: {key} is not measured yet "
                                 "(the target's micro-benchmark has not been run)")
        return float(value)


def load_target_file(path: str | Path, distribution: str = "") -> Target:
    """Parse and validate one target file; any problem raises ``UserInputError``."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UserInputError(f"{path}: cannot read target file ({exc.strerror})") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UserInputError(f"{path}: not valid TOML ({exc})") from exc
    return _TargetParser(path, raw).parse(distribution)


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


def load_targets(dirs: Mapping[Path, str] | None = None) -> dict[str, Target]:
    """All targets by name, from ``dirs`` (folder -> distribution; default: the installed).

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
            targets[target.name] = target
            log.debug("target %s from %s (%s)", target.name, path, distribution)
    return dict(sorted(targets.items()))


def get_target(name: str, targets: Mapping[str, Target] | None = None) -> Target:
    """The target called ``name``; an unknown name raises ``UnknownNameError`` with suggestions."""
    targets = load_targets() if targets is None else targets
    if name in targets:
        return targets[name]
    close = difflib.get_close_matches(name, list(targets), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    known = ", ".join(targets) or "none installed"
    raise UnknownNameError(f"unknown target {name!r}{hint} (known: {known})")


class _TargetParser:
    """Validation of one parsed TOML document, each error naming the file and key."""

    def __init__(self, path: Path, raw: dict[str, Any]) -> None:
        self.path = path
        self.raw = raw

    def fail(self, key: str, problem: str) -> UserInputError:
        return UserInputError(f"{self.path}: key {key!r} {problem}")

    def parse(self, distribution: str) -> Target:
        self._check_keys(self.raw, _REQUIRED, _OPTIONAL, prefix="")
        name = self.raw.get("name", self.path.stem)
        if name != self.path.stem:
            raise self.fail("name", f"is {name!r} but the file is named {self.path.name}; "
                                    "they must agree")
        tvm = self._table("tvm")
        self._check_keys(tvm, ("target",), ("tag",), prefix="tvm.")
        dtypes = self._dtypes()
        raw = self.raw
        return Target(
            name=name, description=self._text("description", raw["description"]),
            tvm_target_json=self._tvm_target(tvm["target"]),
            tvm_tag=self._text("tvm.tag", tvm["tag"]) if "tag" in tvm else None,
            host_triple=self._optional_text("host_triple"),
            cross_compiler=self._optional_text("cross_compiler"),
            peak_flops=self._figures("peak_flops", dtypes, required=True),
            peak_flops_sparse=self._figures("peak_flops_sparse", dtypes, required=False),
            memory_bandwidth=self._figure("memory_bandwidth", raw["memory_bandwidth"],
                                          _MIN_RATE, None, "bytes per second"),
            launch_overhead=self._figure("launch_overhead", raw["launch_overhead"],
                                         0.0, _MAX_LAUNCH_OVERHEAD_S, "seconds"),
            supported_dtypes=dtypes,
            default_pipeline=self._text("default_pipeline", raw["default_pipeline"]),
            sources=self._sources(), path=self.path, distribution=distribution)

    def _check_keys(self, table: Mapping[str, Any], required: tuple[str, ...],
                    optional: tuple[str, ...], prefix: str) -> None:
        known = required + optional
        for key in table:
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise self.fail(prefix + key, f"is not a target key{hint}")
        for key in required:
            if key not in table:
                raise self.fail(prefix + key, "is missing")

    def _table(self, key: str) -> dict[str, Any]:
        value = self.raw[key]
        if not isinstance(value, dict):
            raise self.fail(key, f"must be a table, not {type(value).__name__}")
        return value

    def _text(self, key: str, value: Any) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(key, "must be a non-empty string")
        return value

    def _optional_text(self, key: str) -> str | None:
        return self._text(key, self.raw[key]) if key in self.raw else None

    def _tvm_target(self, value: Any) -> str:
        if isinstance(value, str):
            raise self.fail("tvm.target", "must be a table such as {kind = \"llvm\", mtriple = "
                                          "\"x86_64-linux-gnu\"}; TVM 0.27 refuses target strings")
        if not isinstance(value, dict) or not isinstance(value.get("kind"), str):
            raise self.fail("tvm.target", "must be a table with a string 'kind'")
        try:
            return json.dumps(value, sort_keys=True, allow_nan=False)
        except (TypeError, ValueError) as exc:  # TOML dates and infinities are not JSON
            raise self.fail("tvm.target", f"must hold JSON values only ({exc})") from None

    def _dtypes(self) -> tuple[str, ...]:
        value = self.raw["supported_dtypes"]
        if not isinstance(value, list) or not value:
            raise self.fail("supported_dtypes", "must be a non-empty list of dtype names")
        for dtype in value:
            self._check_dtype("supported_dtypes", dtype)
        return tuple(value)

    def _check_dtype(self, key: str, dtype: Any) -> None:
        if not isinstance(dtype, str) or not is_tensor_dtype(dtype):
            raise self.fail(key, f"names {dtype!r}, which is not a dtype (float32, int8, ...)")

    def _figures(self, key: str, dtypes: tuple[str, ...], required: bool,
                 ) -> Mapping[str, Figure]:
        if key not in self.raw and not required:
            return MappingProxyType({})
        table = self._table(key)
        figures: dict[str, Figure] = {}
        for dtype, value in table.items():
            self._check_dtype(f"{key}.{dtype}", dtype)
            if dtype not in dtypes:
                raise self.fail(f"{key}.{dtype}", "is for a dtype missing from supported_dtypes")
            figures[dtype] = self._figure(f"{key}.{dtype}", value, _MIN_RATE, None,
                                          "operations per second")
        missing = [d for d in dtypes if d not in figures] if required else []
        if missing:
            raise self.fail(key, f"has no figure for supported dtype(s) {', '.join(missing)} "
                                 f"(use \"{MEASURED}\" for figures measured on the device)")
        return MappingProxyType(figures)

    def _figure(self, key: str, value: Any, low: float, high: float | None,
                unit: str) -> Figure:
        if value == MEASURED:
            return MEASURED
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(key, f"must be a number ({unit}) or \"{MEASURED}\", not {value!r}")
        if not math.isfinite(value) or value <= low or (high is not None and value > high):
            bounds = f"> {low:g}" + (f" and <= {high:g}" if high is not None else "")
            raise self.fail(key, f"is {value!r}, implausible: expected {bounds} {unit}")
        return float(value)

    def _sources(self) -> Mapping[str, str]:
        table = self._table("sources")
        for key, text in table.items():
            if not isinstance(text, str) or not text.strip():
                raise self.fail(f"sources.{key}", "must be a non-empty string")
        published = [f"peak_flops.{d}" for d, v in self.raw["peak_flops"].items()
                     if v != MEASURED]
        published += [f"peak_flops_sparse.{d}" for d, v in
                      self.raw.get("peak_flops_sparse", {}).items() if v != MEASURED]
        published += [k for k in ("memory_bandwidth", "launch_overhead") if self.raw[k] != MEASURED]
        unsourced = [k for k in published if k not in table]
        if unsourced:
            raise self.fail("sources", f"gives no source for {', '.join(unsourced)}; every "
                                       "figure that is not \"measured\" needs one")
        return MappingProxyType(dict(table))
