"""The rule table: one small module per op family, merged into one read-only mapping.

Each module exports ``RULES: dict[str, Rule]`` for ops of the default ONNX domain.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from optc.interp.context import Rule
from optc.interp.rules import (
    activation,
    arith,
    control,
    conv,
    elementwise,
    generate,
    index,
    linalg,
    logic,
    norm,
    pad,
    pool,
    quant,
    recurrent,
    reduce,
    resize,
    sampling,
    selection,
    shape,
)

_MODULES = (activation, arith, control, conv, elementwise, generate, index, linalg, logic, norm,
            pad, pool, quant, recurrent, reduce, resize, sampling, selection, shape)


def _merge() -> Mapping[str, Rule]:
    table: dict[str, Rule] = {}
    for module in _MODULES:
        clash = table.keys() & module.RULES.keys()
        if clash:  # a programming error, caught by the first import in any test
            raise RuntimeError(f"ops with two rules: {sorted(clash)}")
        table.update(module.RULES)
    return MappingProxyType(table)


DEFAULT_DOMAIN_RULES: Mapping[str, Rule] = _merge()
"""op type -> rule, for the default ONNX domain ("" or "ai.onnx")."""
