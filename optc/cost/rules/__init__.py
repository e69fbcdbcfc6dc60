"""The roofline rule table: one module per op family, merged into one read-only mapping.

A rule maps a ``NodeView`` to a ``Work``; ops of other domains than the default one
are keyed ``"domain::op"`` (``contrib``). ``tests/test_cost_rules.py`` checks that
every op the reference interpreter supports has one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

from optc.cost.rules import (
    contrib,
    control,
    elementwise,
    linalg,
    movement,
    norm,
    pool,
    quant,
    recurrent,
    reduce,
)
from optc.cost.work import NodeView, Work

Rule = Callable[[NodeView], Work]

_MODULES = (contrib, control, elementwise, linalg, movement, norm, pool, quant, recurrent, reduce)


def _merge() -> Mapping[str, Rule]:
    table: dict[str, Rule] = {}
    for module in _MODULES:
        clash = table.keys() & module.RULES.keys()
        if clash:  # a programming error, caught by the first import in any test
            raise RuntimeError(f"ops with two cost rules: {sorted(clash)}")
        table.update(module.RULES)
    return MappingProxyType(table)


RULES: Mapping[str, Rule] = _merge()
"""op type (default ONNX domain) -> cost rule."""
