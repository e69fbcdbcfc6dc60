"""The target file format: parse one ``<name>.toml`` into a ``Target``, every error naming
the file and the key.

Required keys: ``description``, ``[tvm]`` (``target`` table; optional ``tag`` and
``byoc``, the TVM BYOC codegen for accelerator partitions), ``supported_dtypes``,
``[peak_flops]``, ``memory_bandwidth``, ``launch_overhead``, ``default_pipeline``,
``[sources]``. Optional: ``name`` (must equal the file name), ``host_triple``,
``cross_compiler``, ``[peak_flops_sparse]``, ``[cache]`` (``size``, ``bandwidth`` of
the last-level cache), ``[efficiency]`` (op class -> fraction of the roofline reached),
``calibration`` (the micro-benchmark measuring ``"measured"`` figures),
``supported_ops`` with ``[fallback]`` (accelerators running only some ops).
"""

from __future__ import annotations

import difflib
import json
import math
import sys
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

from optc.errors import UserInputError
from optc.ir.dtypes import is_tensor_dtype
from optc.target import COMPUTE_TYPES, MEASURED, Fallback, Figure, Target

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 has only the tomli backport
    import tomli as tomllib

EFFICIENCY_CLASSES: Final = ("matmul", "conv", "depthwise", "pool", "norm", "softmax",
                             "reduce", "elementwise", "data", "other")
"""Op classes of the roofline model; a target's ``[efficiency]`` table is keyed by them."""

CALIBRATIONS: Final = ("host-cpu",)
"""Micro-benchmarks optc knows (``optc.cost.calibration``)."""

# Plausibility bounds catch unit slips (GB/s written where bytes/s is meant, µs for s).
_MIN_RATE = 1e6
_MAX_LATENCY_S = 0.1
_MIN_CACHE_BYTES = 1024.0

_REQUIRED = ("description", "tvm", "supported_dtypes", "peak_flops", "memory_bandwidth",
             "launch_overhead", "default_pipeline", "sources")
_OPTIONAL = ("name", "host_triple", "cross_compiler", "peak_flops_sparse", "supported_ops",
             "fallback", "cache", "efficiency", "calibration")
_FALLBACK_KEYS = ("description", "peak_flops", "memory_bandwidth", "launch_overhead",
                  "link_bandwidth", "link_latency")


def parse_target_file(path: Path, distribution: str = "") -> Target:
    """Parse and validate one target file; any problem raises ``UserInputError``."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UserInputError(f"{path}: cannot read target file ({exc.strerror})") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UserInputError(f"{path}: not valid TOML ({exc})") from exc
    return _TargetParser(path, raw).parse(distribution)


def check_efficiency(table: Mapping[str, Any], where: str) -> dict[str, float]:
    """Validate an efficiency table: known op classes, fractions in (0, 1]."""
    checked: dict[str, float] = {}
    for key, value in table.items():
        if key not in EFFICIENCY_CLASSES:
            close = difflib.get_close_matches(key, EFFICIENCY_CLASSES, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise UserInputError(f"{where}: key 'efficiency.{key}' is not an op class{hint} "
                                 f"(known: {', '.join(EFFICIENCY_CLASSES)})")
        if isinstance(value, bool) or not isinstance(value, int | float) \
                or not 0 < value <= 1:
            raise UserInputError(f"{where}: key 'efficiency.{key}' is {value!r}; expected a "
                                 "fraction of the roofline in (0, 1]")
        checked[key] = float(value)
    return checked


class _TargetParser:
    """Validation of one parsed TOML document, each error naming the file and key."""

    def __init__(self, path: Path, raw: dict[str, Any]) -> None:
        self.path = path
        self.raw = raw

    def fail(self, key: str, problem: str) -> UserInputError:
        return UserInputError(f"{self.path}: key {key!r} {problem}")

    def parse(self, distribution: str) -> Target:
        raw = self.raw
        self._check_keys(raw, _REQUIRED, _OPTIONAL, prefix="")
        name = raw.get("name", self.path.stem)
        if name != self.path.stem:
            raise self.fail("name", f"is {name!r} but the file is named {self.path.name}; "
                                    "they must agree")
        tvm = self._table(raw, "tvm")
        self._check_keys(tvm, ("target",), ("tag", "byoc"), prefix="tvm.")
        dtypes = self._dtypes()
        cache = self._cache()
        fields: dict[str, Any] = dict(
            peak_flops=self._figures(raw, "peak_flops", dtypes, required=True),
            peak_flops_sparse=self._figures(raw, "peak_flops_sparse", dtypes, required=False),
            memory_bandwidth=self._rate("memory_bandwidth", raw["memory_bandwidth"]),
            launch_overhead=self._latency("launch_overhead", raw["launch_overhead"]),
            supported_ops=self._ops(), fallback=self._fallback(),
            cache_size=cache[0], cache_bandwidth=cache[1],
            efficiency=MappingProxyType(check_efficiency(
                self._table(raw, "efficiency") if "efficiency" in raw else {}, str(self.path))),
            calibration=self._calibration())
        # Sources last: a figure's own error is clearer than "no source for" it.
        return Target(
            name=name, description=self._text("description", raw["description"]),
            tvm_target_json=self._tvm_target(tvm["target"]),
            tvm_tag=self._text("tvm.tag", tvm["tag"]) if "tag" in tvm else None,
            tvm_byoc=self._text("tvm.byoc", tvm["byoc"]) if "byoc" in tvm else None,
            host_triple=self._optional_text("host_triple"),
            cross_compiler=self._optional_text("cross_compiler"), supported_dtypes=dtypes,
            default_pipeline=self._text("default_pipeline", raw["default_pipeline"]),
            sources=self._sources(), path=self.path, distribution=distribution, **fields)

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

    def _table(self, parent: Mapping[str, Any], key: str, prefix: str = "") -> dict[str, Any]:
        value = parent[key]
        if not isinstance(value, dict):
            raise self.fail(prefix + key, f"must be a table, not {type(value).__name__}")
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

    def _figures(self, parent: Mapping[str, Any], key: str, dtypes: tuple[str, ...] | None,
                 required: bool, prefix: str = "") -> Mapping[str, Figure]:
        """A peak table; ``dtypes`` None accepts any dtype (a fallback CPU's own table)."""
        if key not in parent and not required:
            return MappingProxyType({})
        table = self._table(parent, key, prefix)
        figures: dict[str, Figure] = {}
        for dtype, value in table.items():
            full = f"{prefix}{key}.{dtype}"
            if dtype not in COMPUTE_TYPES:
                self._check_dtype(full, dtype)
                if dtypes is not None and dtype not in dtypes:
                    raise self.fail(full, "is for a dtype missing from supported_dtypes")
            figures[dtype] = self._rate(full, value, "operations per second")
        missing = [d for d in dtypes if d not in figures] if required and dtypes else []
        if missing:
            raise self.fail(prefix + key, f"has no figure for supported dtype(s) "
                                          f"{', '.join(missing)} (use \"{MEASURED}\" for "
                                          "figures measured on the device)")
        if not figures:
            raise self.fail(prefix + key, "is empty")
        return MappingProxyType(figures)

    def _rate(self, key: str, value: Any, unit: str = "bytes per second") -> Figure:
        return self._figure(key, value, _MIN_RATE, None, unit)

    def _latency(self, key: str, value: Any) -> Figure:
        return self._figure(key, value, 0.0, _MAX_LATENCY_S, "seconds")

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

    def _cache(self) -> tuple[Figure | None, Figure | None]:
        if "cache" not in self.raw:
            return None, None
        table = self._table(self.raw, "cache")
        self._check_keys(table, ("size", "bandwidth"), (), prefix="cache.")
        return (self._figure("cache.size", table["size"], _MIN_CACHE_BYTES, None, "bytes"),
                self._rate("cache.bandwidth", table["bandwidth"]))

    def _ops(self) -> frozenset[str] | None:
        if "supported_ops" not in self.raw:
            return None
        ops = self.raw["supported_ops"]
        if not isinstance(ops, list) or not ops or not all(
                isinstance(op, str) and op.strip() for op in ops):
            raise self.fail("supported_ops", "must be a non-empty list of ONNX op names")
        if "fallback" not in self.raw:
            raise self.fail("supported_ops", "needs a [fallback] table: the CPU that runs "
                                             "every other op")
        return frozenset(ops)

    def _fallback(self) -> Fallback | None:
        if "fallback" not in self.raw:
            return None
        table = self._table(self.raw, "fallback")
        self._check_keys(table, _FALLBACK_KEYS, (), prefix="fallback.")
        return Fallback(
            description=self._text("fallback.description", table["description"]),
            peak_flops=self._figures(table, "peak_flops", None, required=True,
                                     prefix="fallback."),
            memory_bandwidth=self._rate("fallback.memory_bandwidth", table["memory_bandwidth"]),
            launch_overhead=self._latency("fallback.launch_overhead", table["launch_overhead"]),
            link_bandwidth=self._rate("fallback.link_bandwidth", table["link_bandwidth"]),
            link_latency=self._latency("fallback.link_latency", table["link_latency"]))

    def _calibration(self) -> str | None:
        if "calibration" not in self.raw:
            return None
        value = self._text("calibration", self.raw["calibration"])
        if value not in CALIBRATIONS:
            raise self.fail("calibration", f"is {value!r}; known: {', '.join(CALIBRATIONS)}")
        return value

    def _sources(self) -> Mapping[str, str]:
        table = self._table(self.raw, "sources")
        for key, text in table.items():
            if not isinstance(text, str) or not text.strip():
                raise self.fail(f"sources.{key}", "must be a non-empty string")
        unsourced = [k for k in self._published() if k not in table]
        if unsourced:
            raise self.fail("sources", f"gives no source for {', '.join(unsourced)}; every "
                                       "figure that is not \"measured\" needs one")
        return MappingProxyType(dict(table))

    def _published(self) -> list[str]:
        """Keys of every figure given as a number (each needs a source)."""
        raw = self.raw
        keys = [f"{table}.{d}" for table in ("peak_flops", "peak_flops_sparse")
                for d, v in _as_dict(raw.get(table)).items() if v != MEASURED]
        keys += [k for k in ("memory_bandwidth", "launch_overhead") if raw[k] != MEASURED]
        keys += [f"cache.{k}" for k, v in _as_dict(raw.get("cache")).items() if v != MEASURED]
        fallback = _as_dict(raw.get("fallback"))
        keys += [f"fallback.peak_flops.{d}" for d, v in
                 _as_dict(fallback.get("peak_flops")).items() if v != MEASURED]
        keys += [f"fallback.{k}" for k in _FALLBACK_KEYS[2:]
                 if k in fallback and fallback[k] != MEASURED]
        keys += ["efficiency"] if raw.get("efficiency") else []
        return keys


def _as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
