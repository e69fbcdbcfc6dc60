"""Host calibration: measure this CPU once, cache the figures per user, apply them to
the ``host`` target.

The cache lives in ``$XDG_CACHE_HOME/optc`` (default ``~/.cache/optc``), one JSON file
per machine kind, keyed by architecture, CPU model and usable core count, so that a
home directory shared between machines keeps one entry per machine kind. Files are
written atomically (a temporary file renamed into place): concurrent runs never see a
half-written entry. An unreadable or outdated entry is measured again.

The entry also holds the detected TVM target (``mcpu``, ``num-cores``, ``mattr``) and
an ``efficiency`` table a later fit of predictions to measured latencies may store,
with the ``fitted_figures`` fitted together with it (the memory bandwidth optc's
kernels reach, which replaces the micro-benchmark's STREAM figure in predictions; the
measured one stays in ``figures``).
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import logging
import os
import platform
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from optc.cost.microbench import measure_host
from optc.errors import UserInputError
from optc.settings import read_settings
from optc.target import MEASURED, Target

log = logging.getLogger(__name__)

FORMAT = 1
"""Version of the cache file layout; entries of another version are measured again."""

CPUINFO = Path("/proc/cpuinfo")
_FITTED = "fitted with the efficiencies"


@dataclasses.dataclass(frozen=True)
class Calibration:
    """One machine's measured figures (keyed like ``Target.pending_figures()``)."""

    key: str
    cpu_model: str
    cores: int
    tvm_target: Mapping[str, Any]
    figures: Mapping[str, float]
    measured_at: str
    quick: bool
    details: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    efficiency: Mapping[str, float] = dataclasses.field(default_factory=dict)
    efficiency_source: str = ""
    fitted_figures: Mapping[str, float] = dataclasses.field(default_factory=dict)

    def source(self) -> str:
        mode = ", quick mode" if self.quick else ""
        return f"host micro-benchmark on {self.cpu_model} x{self.cores} ({self.measured_at}{mode})"


def default_cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    """``$XDG_CACHE_HOME/optc``, else ``~/.cache/optc`` (read by ``optc.settings``)."""
    return read_settings(environ).cache_dir


def cpu_model(cpuinfo: str | None = None) -> str:
    """The CPU's marketing name (x86 ``model name``; Arm implementer/part ids otherwise)."""
    text = _read_cpuinfo() if cpuinfo is None else cpuinfo
    fields = dict(_cpuinfo_fields(text))
    if fields.get("model name"):
        return fields["model name"]
    if "CPU part" in fields:
        return f"arm-{fields.get('CPU implementer', '?')}-{fields['CPU part']}"
    return platform.processor() or platform.machine() or "unknown-cpu"


def usable_cores() -> int:
    """CPUs this process may run on (affinity and cgroup cpusets respected)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


# Flags that change what kernels can do: a cloud VM's model name ("AMD EPYC") is the
# same on a Zen 3 (AVX2) and a Zen 4 (AVX-512, VNNI), whose figures differ severalfold.
_ISA_FLAG_PREFIXES = ("avx", "amx", "fma", "f16c", "vnni", "asimd", "sve", "sme", "i8mm",
                      "bf16", "fphp", "dotprod")


# x86 flags that share a prefix above but are no SIMD feature (``smep``: supervisor mode
# execution protection, not Arm's ``sme``).
_NOT_ISA = frozenset({"smep"})


def isa_flags(flags: frozenset[str]) -> list[str]:
    """The SIMD / matrix-unit flags among ``flags``, sorted (part of the cache key)."""
    return sorted(f for f in flags if f.startswith(_ISA_FLAG_PREFIXES) and f not in _NOT_ISA)


def host_key(model: str | None = None, cores: int | None = None,
             flags: frozenset[str] | None = None) -> str:
    """``x86_64-amd-epyc-2c-1a2b3c4d``: readable, with a digest of the exact model name
    and of the CPU's SIMD flags."""
    model = cpu_model() if model is None else model
    cores = usable_cores() if cores is None else cores
    flags = cpu_flags() if flags is None else flags
    slug = re.sub(r"[^a-z0-9]+", "-", model.lower()).strip("-")[:40] or "cpu"
    identity = model + "|" + ",".join(isa_flags(flags))
    digest = hashlib.sha256(identity.encode()).hexdigest()[:8]
    return f"{platform.machine().lower()}-{slug}-{cores}c-{digest}"


def cache_path(cache_dir: Path | None = None) -> Path:
    return (cache_dir or default_cache_dir()) / f"host-{host_key()}.json"


def load_calibration(path: Path) -> Calibration | None:
    """The cached entry at ``path``; None when absent, unreadable or of another format."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable calibration cache %s (%s)", path, exc)
        return None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        log.info("calibration cache %s has another format; measuring again", path)
        return None
    try:
        fields = {f.name: raw[f.name] for f in dataclasses.fields(Calibration)
                  if f.name in raw}
        return Calibration(**fields)
    except TypeError as exc:
        log.warning("ignoring malformed calibration cache %s (%s)", path, exc)
        return None


def save_calibration(calibration: Calibration, path: Path) -> None:
    """Write atomically: a temporary file in the same folder, renamed over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {"format": FORMAT, **dataclasses.asdict(calibration)}
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(document, handle, indent=2, sort_keys=True, default=dict)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    log.info("host calibration cached in %s", path)


def measure(quick: bool = False) -> Calibration:
    """Run the micro-benchmark on this machine (a few seconds; ``quick``: about one)."""
    model, cores = cpu_model(), usable_cores()
    # A warning: the first use of the host target pauses for seconds, say why.
    log.warning("measuring this CPU (%s, %d cores)%s; done once, the figures are cached",
                model, cores, " in quick mode" if quick else "")
    figures, details = measure_host(cores, cpu_flags(), quick=quick)
    return Calibration(
        key=host_key(model, cores), cpu_model=model, cores=cores,
        tvm_target=detect_tvm_target(cores), figures=figures,
        measured_at=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        quick=quick, details=details)


def apply(target: Target, calibration: Calibration) -> Target:
    """``target`` with its pending figures (and TVM target) taken from ``calibration``.

    Figures the target file gives as numbers win: a user's explicit value is kept. A
    figure fitted with the efficiencies replaces the measured one.
    """
    fitted = {k: v for k, v in calibration.fitted_figures.items()
              if _pending_or_new(target, k)}
    known = {k: v for k, v in calibration.figures.items()
             if _pending_or_new(target, k) and k not in fitted}
    # A TVM target the file spells out (an mcpu) is the user's choice; keep it.
    detected = None if "mcpu" in target.tvm_target_dict else calibration.tvm_target
    measured = target.with_measurements(known, calibration.source(), tvm_target=detected,
                                        new_dtypes=True)
    if fitted:
        measured = measured.with_measurements(
            fitted, f"{_FITTED} ({calibration.efficiency_source or 'fit'})")
    if calibration.efficiency:
        measured = measured.with_efficiency(calibration.efficiency,
                                            calibration.efficiency_source or "fitted")
    return measured


def apply_cached(target: Target, cache_dir: Path | None = None) -> Target:
    """``target`` with the cached calibration applied where one exists (never measures)."""
    calibration = load_calibration(cache_path(cache_dir))
    return target if calibration is None else apply(target, calibration)


def calibrate_target(target: Target, cache_dir: Path | None = None, quick: bool = False,
                     force: bool = False) -> Target:
    """``target`` calibrated: from the cache, or measured now and cached (``force``: always)."""
    path = cache_path(cache_dir)
    calibration = None if force else load_calibration(path)
    if calibration is None:
        calibration = measure(quick=quick)
        save_calibration(calibration, path)
    return apply(target, calibration)


def measured_target(target: Target, cache_dir: Path | None = None) -> Target:
    """The calibrated ``target`` with the figures a previous fit replaced set back to their
    measured values: what a new fit starts from."""
    calibration = load_calibration(cache_path(cache_dir))
    if calibration is None:
        return target
    measured = {k: calibration.figures[k] for k in calibration.fitted_figures
                if k in calibration.figures and target.sources.get(k, "").startswith(_FITTED)}
    return target.with_measurements(measured, calibration.source()) if measured else target


def save_efficiency(efficiency: Mapping[str, float], source: str,
                    cache_dir: Path | None = None,
                    figures: Mapping[str, float] | None = None) -> Calibration:
    """Store fitted per-op-class efficiencies (and the ``figures`` fitted with them, e.g.
    ``memory_bandwidth``; none: earlier fitted figures are dropped) in this machine's
    cache entry."""
    from optc.target_file import check_efficiency

    path = cache_path(cache_dir)
    calibration = load_calibration(path)
    if calibration is None:
        calibration = measure()
    unknown = sorted(set(figures or {}) - set(calibration.figures))
    if unknown:
        raise UserInputError(f"fitted figures {', '.join(unknown)} are no measured figure "
                             f"(known: {', '.join(sorted(calibration.figures))})")
    updated = dataclasses.replace(
        calibration, efficiency=check_efficiency(dict(efficiency), str(path)),
        efficiency_source=source, fitted_figures=dict(figures or {}))
    save_calibration(updated, path)
    return updated


def detect_tvm_target(cores: int) -> dict[str, Any]:
    """The TVM target of this CPU: ``optc.codegen.host_cpu`` when present, else cpuinfo."""
    try:
        from optc.codegen.host_cpu import host_target
    except ImportError:
        return _cpuinfo_target(cores)
    return dict(host_target(num_cores=cores))


def cpu_flags() -> frozenset[str]:
    fields = dict(_cpuinfo_fields(_read_cpuinfo()))
    return frozenset((fields.get("flags") or fields.get("Features") or "").split())


def _cpuinfo_target(cores: int) -> dict[str, Any]:
    """A minimal LLVM target from /proc/cpuinfo: AMD Zen generations get their ``mcpu``."""
    target: dict[str, Any] = {"kind": "llvm", "mtriple": f"{platform.machine()}-linux-gnu",
                              "num-cores": cores}
    fields = dict(_cpuinfo_fields(_read_cpuinfo()))
    mcpu = _zen_mcpu(fields)
    if mcpu:
        target["mcpu"] = mcpu
    return target


def _zen_mcpu(fields: Mapping[str, str]) -> str | None:
    if fields.get("vendor_id") != "AuthenticAMD":
        return None
    family, model = int(fields.get("cpu family", "0")), int(fields.get("model", "0"))
    if family == 0x1A:
        return "znver5"
    if family == 0x19:  # Zen 3 and Zen 4 share family 19h; Zen 4 has AVX-512
        return "znver4" if "avx512f" in fields.get("flags", "").split() else "znver3"
    if family == 0x17:
        return "znver2" if model >= 0x30 else "znver1"
    return None


def _read_cpuinfo() -> str:
    try:
        return CPUINFO.read_text()
    except OSError:
        return ""


def _cpuinfo_fields(text: str) -> list[tuple[str, str]]:
    """``key: value`` pairs of the first processor block."""
    pairs = []
    for line in text.splitlines():
        if not line.strip():
            if pairs:
                break
            continue
        key, _, value = line.partition(":")
        pairs.append((key.strip(), value.strip()))
    return pairs


def _pending_or_new(target: Target, key: str) -> bool:
    table, _, dtype = key.partition(".")
    if table == "peak_flops":
        return target.peak_flops.get(dtype, MEASURED) == MEASURED
    return getattr(target, key, None) == MEASURED
