"""Fit a target's per-op-class efficiencies to measured latencies.

The roofline gives each kernel a busy time at full efficiency; a code generator
reaches a fraction of it that depends mostly on the kind of op (a tuned GEMM gets
close, an untuned convolution far less). With ``F[i, c]`` the busy seconds of op
class ``c`` in model ``i`` and ``fixed[i]`` its launches and transfers, the model is

    measured[i] ~ fixed[i] + sum_c F[i, c] / efficiency[c]

which is linear in ``1 / efficiency``. The fit minimizes relative errors (each row is
divided by its measurement, so small models count as much as large ones) with every
efficiency in (0, 1]. Store the result with ``optc.cost.calibration.save_efficiency``;
the fitted values then apply to every prediction for that target. Classes absent
from the samples keep their current efficiency.

``fit_host`` also fits the memory bandwidth optc's kernels reach (a search over
fractions of the measured figure, since it decides which kernels are memory-bound):
batch-1 fully connected layers (AlexNet, VGG) stream their weights well below STREAM.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

import numpy as np

from optc.cost.roofline import RooflineModel
from optc.errors import UserInputError
from optc.ir.graph import Graph
from optc.target import Target
from optc.target_file import EFFICIENCY_CLASSES

log = logging.getLogger(__name__)

MIN_EFFICIENCY = 1e-4
"""The fit never goes below this (a kernel 10,000x slower than its roofline)."""


@dataclasses.dataclass(frozen=True)
class Sample:
    """One measured model: its graph and its measured latency in seconds."""

    graph: Graph
    measured_s: float


def roofline_features(graph: Graph, target: Target, model: RooflineModel | None = None,
                      ) -> tuple[dict[str, float], float]:
    """``(busy seconds per op class at full efficiency, fixed seconds)`` of ``graph``."""
    base = model or RooflineModel()
    unit = dataclasses.replace(base, efficiency={c: 1.0 for c in EFFICIENCY_CLASSES})
    busy: dict[str, float] = {}
    fixed = 0.0
    for row in unit.breakdown(graph, target).nodes:
        own = row.latency_s - row.launch_s - row.transfer_s
        busy[row.op_class] = busy.get(row.op_class, 0.0) + own
        fixed += row.launch_s + row.transfer_s
    return busy, fixed


def fit_efficiency(samples: Sequence[Sample], target: Target,
                   model: RooflineModel | None = None, min_share: float = 0.05,
                   ) -> dict[str, float]:
    """Efficiencies per op class that best explain ``samples`` on ``target``.

    Classes that never take ``min_share`` of a sample's predicted busy time cannot be
    told apart from noise: they share one pooled efficiency, as do the smallest
    classes when there are fewer samples than classes (one parameter per sample).
    """
    measured = _measured(samples)
    features = [roofline_features(s.graph, target, model) for s in samples]
    fitted, _ = _fit_linear(features, measured, min_share)
    log.info("fitted efficiencies on %d samples: %s", len(samples), fitted)
    return fitted


@dataclasses.dataclass(frozen=True)
class HostFit:
    """A target's fitted efficiencies and the figures fitted with them.

    ``figures``: ``memory_bandwidth``, what optc's kernels reach streaming weights and
    activations from memory (a fraction of the micro-benchmark's STREAM figure: batch-1
    fully connected layers read their weights column panel by column panel, not as one
    stream); ``error``: the fit's root mean square relative error.
    """

    efficiency: dict[str, float]
    figures: dict[str, float]
    error: float


BANDWIDTH_FRACTIONS = (1.0, 0.8, 0.64, 0.51, 0.41, 0.33, 0.26, 0.21, 0.17, 0.13, 0.1)
"""Fractions of the measured memory bandwidth ``fit_host`` tries."""


def fit_host(samples: Sequence[Sample], target: Target, model: RooflineModel | None = None,
             min_share: float = 0.05,
             fractions: Sequence[float] = BANDWIDTH_FRACTIONS) -> HostFit:
    """Efficiencies and the achieved memory bandwidth that best explain ``samples``.

    The efficiencies are linear in the model (least squares); the bandwidth decides
    which kernels are memory-bound, so it is searched over ``fractions`` of the
    target's own figure, keeping the best fit.
    """
    measured = _measured(samples)
    base = model or RooflineModel()
    stream = target.bandwidth()
    best: HostFit | None = None
    for fraction in fractions:
        slower = target.with_measurements({"memory_bandwidth": stream * fraction},
                                          "fit candidate")
        features = [roofline_features(s.graph, slower, base) for s in samples]
        efficiency, error = _fit_linear(features, measured, min_share)
        log.info("bandwidth x%.2f: error %.3f", fraction, error)
        if best is None or error < best.error:
            best = HostFit(efficiency, {"memory_bandwidth": stream * fraction}, error)
    assert best is not None
    log.info("fitted on %d samples: %s %s", len(samples), best.efficiency, best.figures)
    return best


def _measured(samples: Sequence[Sample]) -> np.ndarray:
    if not samples:
        raise UserInputError("fitting efficiencies needs at least one measured model")
    measured = np.array([s.measured_s for s in samples])
    if np.any(measured <= 0):
        raise UserInputError("measured latencies must be positive")
    return measured


def _fit_linear(features: list[tuple[dict[str, float], float]], measured: np.ndarray,
                min_share: float) -> tuple[dict[str, float], float]:
    """``(efficiencies, root mean square relative error)`` of the least-squares fit."""
    from scipy.optimize import lsq_linear  # deferred: only fitting needs scipy

    groups = _parameter_groups([busy for busy, _ in features], min_share, len(measured))
    matrix = np.array([[sum(busy.get(c, 0.0) for c in group) for group in groups]
                       for busy, _ in features])
    residual = measured - np.array([fixed for _, fixed in features])
    weights = 1.0 / measured  # relative errors: every model counts the same
    result = lsq_linear(matrix * weights[:, None], residual * weights,
                        bounds=(1.0, 1.0 / MIN_EFFICIENCY))
    fitted = {c: min(1.0, float(1.0 / x)) for group, x in zip(groups, result.x, strict=True)
              for c in group}
    error = float(np.sqrt(np.mean(((matrix @ result.x - residual) * weights) ** 2)))
    return fitted, error


def _parameter_groups(busy: list[dict[str, float]], min_share: float, samples: int,
                      ) -> list[tuple[str, ...]]:
    """Op classes fitted on their own (largest first), then one pooled group."""
    share: dict[str, float] = {}
    for row in busy:
        total = sum(row.values()) or 1.0
        for c, seconds in row.items():
            if seconds > 0:
                share[c] = max(share.get(c, 0.0), seconds / total)
    ranked = sorted(share, key=lambda c: -share[c])
    own = [c for c in ranked if share[c] >= min_share][:max(samples - 1, 1)]
    pooled = tuple(c for c in ranked if c not in own)
    return [(c,) for c in own] + ([pooled] if pooled else [])


def mape(predicted: Sequence[float], measured: Sequence[float]) -> float:
    """Mean absolute percentage error, in percent."""
    if len(predicted) != len(measured) or not measured:
        raise UserInputError("mape needs as many predictions as measurements, at least one")
    errors = [abs(p - m) / m for p, m in zip(predicted, measured, strict=True)]
    return 100.0 * sum(errors) / len(errors)
