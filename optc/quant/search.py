"""Bisection over the sensitivity order for the fastest assignment within the allowed drop.

After Schaefer et al. (2023): layers are sorted from least to most sensitive and a
prefix of that order is lowered; the prefix length is found by bisection, assuming the
drop grows with the prefix (the order is what makes that assumption reasonable). With
several bit-widths the ladder is walked from wide to narrow (e.g. fp16, then int8,
then int4): each step bisects over the layers the previous step lowered, ordered by
their sensitivity at the new width, so a layer that could not take 16 bits is never
tried at 8. Each step first tries all its candidates at once (one measurement, no
sensitivities needed when they all fit, as is common for fp16). A step whose all-at-once
assignment is not faster than the current one by ``MIN_GAIN`` is skipped (its layers stay
at the previous width, the next step tries them): float16 on a CPU without float16
arithmetic, 4-bit weights stored as int8 codes, cost accuracy for nothing. Every measured
assignment is kept; the answer is the lowest-latency one
whose drop is within ``max_drop`` (usually the last, but a latency model that charges
for Q/DQ conversions may prefer a shorter prefix that was also measured).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType

from optc.quant.evaluate import Measure
from optc.quant.numerics import FP32, LayerPrecision

log = logging.getLogger(__name__)

Assignment = Mapping[str, LayerPrecision]
MIN_GAIN = 0.01
"""A ladder step must make lowering all its candidates at least this much faster."""


@dataclasses.dataclass(frozen=True)
class Trial:
    """One measured assignment (layer key -> precision; absent keys are fp32)."""

    assignment: Mapping[str, LayerPrecision]
    measure: Measure
    latency_s: float
    feasible: bool

    def lowered(self) -> int:
        return sum(1 for p in self.assignment.values() if p != FP32)


Evaluate = Callable[[Assignment], Trial]
OrderFor = Callable[[LayerPrecision, Sequence[str], Assignment], list[str]]
"""``order_for(precision, candidate keys, current assignment)``: candidates, least
sensitive first."""


@dataclasses.dataclass(frozen=True)
class SearchResult:
    chosen: Trial
    trials: tuple[Trial, ...]
    orders: Mapping[str, tuple[str, ...]]  # precision label -> order used at that step


def bisect_ladder(keys: Sequence[str], ladder: Sequence[LayerPrecision], order_for: OrderFor,
                  evaluate: Evaluate,
                  eligible: Callable[[LayerPrecision, str], bool] | None = None,
                  ) -> SearchResult:
    """Walk ``ladder`` (widest first) lowering the longest feasible prefix at each step;
    ``eligible(precision, key)`` (default: always) keeps a layer out of a step where it
    would only lose accuracy (6-bit codes on a layer the 6-bit kernel does not run)."""
    current: dict[str, LayerPrecision] = {}
    trials = [evaluate(frozen(current))]
    base = trials[0]  # the trial of ``current``
    skipped: list[Trial] = []  # recorded, never chosen: under MIN_GAIN for the accuracy
    orders: dict[str, tuple[str, ...]] = {}
    candidates = list(keys)
    previous = FP32
    for precision in ladder:
        candidates = [k for k in candidates if current.get(k, FP32) == previous
                      and (eligible is None or eligible(precision, k))]
        if not candidates:
            break
        everything = dict(current)
        everything.update({key: precision for key in candidates})
        trials.append(evaluate(frozen(everything)))
        if trials[-1].latency_s > base.latency_s * (1 - MIN_GAIN):
            log.info("mixed-precision: skipping %s: %d layers at once are not faster "
                     "(%.3g s vs %.3g s)", precision.label, len(candidates),
                     trials[-1].latency_s, base.latency_s)
            skipped.append(trials[-1])
            continue
        if trials[-1].feasible:  # no order needed: every candidate takes this width
            order, count, base = candidates, len(candidates), trials[-1]
        else:
            order = order_for(precision, candidates, frozen(current))
            orders[precision.label] = tuple(order)
            count, step_trials = longest_feasible_prefix(order, precision, current, evaluate)
            trials.extend(step_trials)
            lowered = {**current, **{key: precision for key in order[:count]}}
            base = _trial_of(step_trials, lowered, base)
        log.info("mixed-precision: %d of %d layers take %s", count, len(order),
                 precision.label)
        if count == 0:
            break
        current.update({key: precision for key in order[:count]})
        candidates, previous = order[:count], precision
    feasible = [t for t in trials if t.feasible and not any(t is s for s in skipped)]
    chosen = min(feasible, key=lambda t: (t.latency_s, t.measure.drop, -t.lowered()))
    return SearchResult(chosen, tuple(trials), MappingProxyType(orders))


def _trial_of(trials: Sequence[Trial], assignment: Assignment, default: Trial) -> Trial:
    """The trial of ``assignment`` among ``trials`` (``default`` if none measured it)."""
    wanted = dict(frozen(assignment))
    return next((t for t in trials if dict(t.assignment) == wanted), default)


def longest_feasible_prefix(order: Sequence[str], precision: LayerPrecision,
                            base: Assignment, evaluate: Evaluate) -> tuple[int, list[Trial]]:
    """The largest ``k < len(order)`` such that lowering ``order[:k]`` stays feasible, by
    bisection (the caller found the whole order infeasible)."""
    def trial(k: int) -> Trial:
        assignment = dict(base)
        assignment.update({key: precision for key in order[:k]})
        return evaluate(frozen(assignment))

    measured: list[Trial] = []
    low, high = 0, len(order) - 1  # invariant: low feasible (0 is the base), high+1 not
    while low < high:
        mid = (low + high + 1) // 2
        measured.append(trial(mid))
        if measured[-1].feasible:
            low = mid
        else:
            high = mid - 1
    return low, measured


def frozen(assignment: Mapping[str, LayerPrecision]) -> Mapping[str, LayerPrecision]:
    """A read-only copy without fp32 entries (the canonical form of an assignment)."""
    return MappingProxyType({k: v for k, v in sorted(assignment.items()) if v != FP32})
