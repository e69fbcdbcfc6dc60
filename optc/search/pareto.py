"""Evaluated candidates as points (latency, accuracy); the Pareto front; the choice.

A point's latency is its measured median when it was measured with the full number
of repeats, else its median over a few runs, else its predicted latency: measurement
is the truth, a prediction only the best guess for candidates that were never run.
The choice is the most accurate point within the accuracy drop and the latency
budget; equal scores go to the faster.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any, Literal

Stage = Literal["predicted", "quick", "measured", "failed"]
"""How far a candidate got: priced and scored; timed on a few runs; timed in full;
failed to build or run (``note`` says why)."""


@dataclasses.dataclass(frozen=True)
class Point:
    """One evaluated candidate."""

    index: int
    pipeline: str
    score: float
    drop: float
    predicted_s: float | None
    predicted_ln_std: float | None = None
    """The cost model's spread of ``ln(latency)``, when it gives one."""
    quick_s: float | None = None
    measured_s: float | None = None
    stage: Stage = "predicted"
    note: str = ""
    score_source: str = "interpreter"
    """``interpreter`` (the reference, on the candidate graph) or ``compiled`` (the
    compiled artifact itself on the calibration data: the full evaluation)."""
    same_graph: tuple[str, ...] = ()
    """Other pipelines that produced the same graph (not evaluated twice)."""

    @property
    def latency_s(self) -> float | None:
        """Measured in full, else on a few runs, else predicted (None when unknown)."""
        for value in (self.measured_s, self.quick_s, self.predicted_s):
            if value is not None:
                return value
        return None

    @property
    def latency_source(self) -> str:
        if self.measured_s is not None:
            return "measured"
        return "quick" if self.quick_s is not None else "predicted"

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "same_graph": list(self.same_graph),
                "latency_s": self.latency_s,
                "latency_source": self.latency_source}


def dominates(a: Point, b: Point) -> bool:
    """``a`` is no slower and no less accurate than ``b``, and better in one of the two."""
    if a.latency_s is None or b.latency_s is None:
        return False
    return (a.latency_s <= b.latency_s and a.score >= b.score
            and (a.latency_s < b.latency_s or a.score > b.score))


def pareto_front(points: Iterable[Point]) -> list[Point]:
    """The points no other point dominates (failed and unpriced ones left out), fastest
    first."""
    usable = [p for p in points if p.stage != "failed" and p.latency_s is not None]
    front = [p for p in usable if not any(dominates(q, p) for q in usable)]
    return sorted(front, key=lambda p: (p.latency_s, -p.score, p.index))


def accuracy_order(points: Iterable[Point]) -> list[Point]:
    """Most accurate first; equal scores by lower predicted latency (unpriced last)."""
    return sorted(points, key=lambda p: (-p.score, p.predicted_s is None,
                                         p.predicted_s or 0.0, p.index))


def select(points: Sequence[Point], budget_s: float, max_drop: float) -> Point | None:
    """The most accurate point within ``max_drop`` whose latency is within ``budget_s``."""
    fitting = [p for p in points if p.stage != "failed" and p.drop <= max_drop
               and p.latency_s is not None and p.latency_s <= budget_s]
    return accuracy_order(fitting)[0] if fitting else None


def fastest(points: Sequence[Point], max_drop: float) -> Point | None:
    """The best point when nothing meets the budget: the fastest within ``max_drop``
    (the fastest of all when none is that accurate); the more accurate on a tie."""
    usable = [p for p in points if p.stage != "failed" and p.latency_s is not None]
    accurate = [p for p in usable if p.drop <= max_drop] or usable
    if not accurate:
        return None
    return min(accurate, key=lambda p: (p.latency_s, -p.score, p.index))
