"""Fit the host roofline to this machine: measure generated models, fit, cache.

The micro-benchmark's peaks (``calibration.py``) make the roofline a lower bound: optc's
kernels reach a fraction of peak that depends on the kind of op, and batch-1 fully
connected layers stream their weights below the STREAM figure. ``fit_here`` measures
generated models with optc's own TVM build on this host (``tvm-2t``: two threads, the
compile path), fits per-op-class efficiencies and the achieved bandwidth
(``fit.fit_host``) and stores them in this machine's calibration cache entry, where
every later roofline estimate for ``host`` picks them up.

The models come from ``optc.latency.arch``: ``wide`` ones (AlexNet / VGG-like
convolutions and fully connected layers, 20-800 ms, the range of large real CNNs) and
ordinary ones (small CNNs, transformer encoders, MLPs, 0.04-13 ms). Real benchmark
models are never part of a fit, so a benchmark's roofline error is out of sample.

The fit is per machine: a cloud VM's name ("AMD EPYC") covers a Zen 3 (AVX2) and a
Zen 5 (AVX-512), whose kernels reach different fractions of their peaks, so rows
measured elsewhere are not reused (their file is keyed like the calibration).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from optc.cost.calibration import (
    Calibration,
    default_cache_dir,
    host_key,
    measured_target,
    save_efficiency,
)
from optc.cost.fit import Sample, fit_host, mape, roofline_features
from optc.latency.dataset import Sample as Row
from optc.latency.dataset import graph_for, load_dataset
from optc.target import get_target

DEVICE = "tvm-2t"
"""The device the host roofline describes: optc's TVM build on all (two) cores."""

REPEAT = 6
"""Runs per model, in 3 rounds of 2 (a 400 ms model takes ~3 s to time)."""

FULL = (10, 50)
"""(wide, ordinary) models of a full fit: ~3 minutes on a 2-core Zen 5, ~6 on a Zen 3."""

QUICK = (2, 10)
"""(wide, ordinary) models of ``--quick``: rougher, about a fifth of the time."""


@dataclasses.dataclass(frozen=True)
class FitReport:
    """What a fit stored and how well it explains the rows it was fitted on."""

    calibration: Calibration
    models: int
    mape_at_peak: float
    mape_fitted: float
    seconds: float


def rows_path(cache_dir: Path | None = None) -> Path:
    """This machine's measured fit rows, beside its calibration entry."""
    return (cache_dir or default_cache_dir()) / f"host-fit-{host_key()}.jsonl.gz"


def collect_rows(out: Path, wide: int, ordinary: int, seed: int = 1, device: str = DEVICE,
                 resume: bool = False,
                 progress: Callable[[str], None] | None = None) -> list[Row]:
    """Measure ``wide`` large and ``ordinary`` generated models on ``device`` into ``out``
    (replaced unless ``resume``); returns the file's generated rows of ``device``."""
    from optc.latency.arch import sample_large_specs, sample_specs
    from optc.latency.collect import collect
    from optc.latency.devices import make_devices

    if min(wide, ordinary) < 0:
        raise ValueError(f"model counts must be >= 0, got {wide} and {ordinary}")
    if out.exists() and not resume:
        out.unlink()
    out.parent.mkdir(parents=True, exist_ok=True)
    # The shipped meta-training dataset's ordinary models come from seed 0: another seed.
    specs = sample_large_specs(wide, seed) + sample_specs(ordinary, seed + 1000)
    collect(specs, make_devices([device]), out, REPEAT, rounds=3, progress=progress)
    return generated_rows(out, device)


def generated_rows(path: Path, device: str = DEVICE) -> list[Row]:
    """The rows of generated models measured on ``device`` in ``path`` (none if absent)."""
    if not path.exists():
        return []
    return [r for r in load_dataset(path) if r.device == device and r.model.startswith("gen:")]


def fit_rows(rows: Sequence[Row], source: str, fastest: bool = False,
             cache_dir: Path | None = None) -> FitReport:
    """Fit the host roofline to ``rows`` and store the result in the calibration cache.

    ``fastest`` fits each model's fastest run instead of its median (for rows measured
    on a busy machine); ``source`` says in the cache entry where the rows came from."""
    if not rows:
        raise ValueError("no measured rows to fit")
    started = time.perf_counter()
    # The measured figures, not a previous fit's bandwidth: the search starts from STREAM.
    target = measured_target(get_target("host", cache_dir=cache_dir), cache_dir)
    samples = [Sample(graph_for(r), (r.min_s or r.latency_s) if fastest else r.latency_s)
               for r in rows]
    measured = [s.measured_s for s in samples]
    before = [sum(busy.values()) + fixed
              for busy, fixed in (roofline_features(s.graph, target) for s in samples)]
    fit = fit_host(samples, target)
    saved = save_efficiency(fit.efficiency, source, cache_dir, figures=fit.figures)
    return FitReport(saved, len(samples), mape(before, measured),
                     mape(_fitted_predictions(samples, cache_dir), measured),
                     time.perf_counter() - started)


def _fitted_predictions(samples: Sequence[Sample], cache_dir: Path | None) -> list[float]:
    from optc.cost import RooflineModel

    fitted = get_target("host", cache_dir=cache_dir)  # with the efficiencies just stored
    model = RooflineModel()
    return [model.estimate(s.graph, fitted).latency_s for s in samples]


def fit_here(wide: int = FULL[0], ordinary: int = FULL[1], seed: int = 1,
             cache_dir: Path | None = None,
             progress: Callable[[str], None] | None = None) -> FitReport:
    """Measure ``wide`` + ``ordinary`` generated models on this host and fit to them
    (``fit_rows`` calibrates first if this machine has no cache entry yet: the fit is
    relative to the measured peaks). ``seconds`` covers the measurement too."""
    started = time.perf_counter()
    rows = collect_rows(rows_path(cache_dir), wide, ordinary, seed, progress=progress)
    report = fit_rows(rows, f"fitted on {len(rows)} generated models measured here "
                            f"({wide} wide, {ordinary} ordinary; {DEVICE}, median runs)",
                      cache_dir=cache_dir)
    return dataclasses.replace(report, seconds=time.perf_counter() - started)
