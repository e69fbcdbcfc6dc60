"""What a budgeted compile asks for: the budget as text, and the pipeline to search.

Both are checked before any work is done (before the model is even loaded), so a
bad budget or pass name costs nothing and leaves OUT untouched.
"""

from __future__ import annotations

import re
from typing import Any

from optc.errors import UserInputError
from optc.pipeline import Pipeline, available_passes, parse_pipeline

SEARCH_PASSES = ("mixed-precision",)
"""Lossy passes appended to a budgeted pipeline that has none: without a lossy pass
there is nothing to trade accuracy for latency with."""

_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
_DURATION = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?\s*([a-zµ]+)\s*\Z")


def parse_duration(text: str) -> float:
    """Seconds in ``text``: a positive number and a unit (``20ms``, ``1.5s``, ``500us``)."""
    match = _DURATION.match(text)
    unit = match.group(2) if match else ""
    if match is None or unit not in _UNITS:
        raise UserInputError(f"cannot read the latency budget {text!r}: write a number and a "
                             f"unit, one of {', '.join(_UNITS)} (e.g. 20ms, 1.5s, 500us)")
    seconds = float(text.strip()[:-len(unit)]) * _UNITS[unit]
    if seconds <= 0:
        raise UserInputError(f"the latency budget {text!r} must be positive")
    return seconds


def search_pipeline(text: str, max_drop: float) -> Pipeline:
    """``text`` parsed, with ``SEARCH_PASSES`` appended when no pass is lossy and every
    pass with a ``max_drop`` option that was left at its default set to ``max_drop``."""
    pipeline = parse_pipeline(text)
    if all(p.exact for p in pipeline):
        known = available_passes()
        extra = ",".join(name for name in SEARCH_PASSES if name in known)
        pipeline = parse_pipeline(f"{text},{extra}" if text else extra) if extra else pipeline
    return Pipeline(tuple(_with_max_drop(p, max_drop) for p in pipeline))


def _with_max_drop(pass_: Any, max_drop: float) -> Any:
    names = {spec.field for spec in pass_.options()}
    if "max_drop" not in names or "max-drop" in pass_.option_values():
        return pass_
    return pass_.configure({**pass_.option_values(), "max-drop": max_drop})
