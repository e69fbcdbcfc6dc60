"""Per-target differences in how ops map to hardware, keyed by target name or TVM kind.

- ``transcendental_flops``: what one exp / tanh / erf costs in arithmetic operations.
  CPUs evaluate a vectorized polynomial with range reduction (LLVM / TVM ``fast_exp``:
  about 16 operations); an NVIDIA SM issues 16 special-function results per clock
  against 256 FP32 operations (128 FMA lanes), also 16; an NPU reads a lookup table.
- ``rules``: a replacement cost rule for an op.
- ``absorb``: activations a BYOC pattern folds into the op producing their input (TVM
  ``example_npu``'s ``conv2d_relu_fused``), or TVM's own fusion of element-wise ops into
  the kernel before them on the ``host`` CPU: no launch, no traffic of their own.

A target's name is looked up first, then its TVM kind; the name's entries win.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from optc.cost.rules import Rule
from optc.target import Target

DEFAULT_TRANSCENDENTAL_FLOPS = 16.0


@dataclasses.dataclass(frozen=True)
class TargetOverrides:
    transcendental_flops: float | None = None
    rules: Mapping[str, Rule] = dataclasses.field(default_factory=lambda: MappingProxyType({}))
    absorb: Mapping[str, frozenset[str]] = dataclasses.field(
        default_factory=lambda: MappingProxyType({}))

    def merged(self, other: TargetOverrides) -> TargetOverrides:
        """``self`` with ``other``'s entries taking precedence."""
        return TargetOverrides(
            other.transcendental_flops if other.transcendental_flops is not None
            else self.transcendental_flops,
            MappingProxyType({**self.rules, **other.rules}),
            MappingProxyType({**self.absorb, **other.absorb}))

    def describe(self) -> dict[str, Any]:
        """A JSON-able summary (for the cost model's uuid)."""
        return {"transcendental_flops": self.transcendental_flops,
                "rules": {op: f"{r.__module__}.{r.__qualname__}"
                          for op, r in sorted(self.rules.items())},
                "absorb": {op: sorted(p) for op, p in sorted(self.absorb.items())}}


_ELEMENTWISE = frozenset({
    "Relu", "Clip", "LeakyRelu", "PRelu", "Elu", "Selu", "Sigmoid", "HardSigmoid",
    "HardSwish", "Tanh", "Erf", "Gelu", "Softplus", "Add", "Sub", "Mul", "Div", "Neg",
    "Sqrt", "BatchNormalization"})
_CONTRACTIONS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})

TVM_CPU_FUSION: Mapping[str, frozenset[str]] = MappingProxyType(
    {op: _CONTRACTIONS | _ELEMENTWISE for op in _ELEMENTWISE})
"""Element-wise ops TVM's ``FuseOps`` joins to the contraction or element-wise op before
them on a CPU (optc's contraction schedule computes them in its epilogue, at the
accumulator tile): priced as part of that kernel, without a launch or traffic of their
own. The ``host`` target's entry (its efficiencies are fitted with it); other ``llvm``
targets keep their kernels apart, so that the learned model's nominal encoder CPU sees
the features it was trained on."""


BUILTIN: Mapping[str, TargetOverrides] = MappingProxyType({
    "llvm": TargetOverrides(transcendental_flops=16.0),
    "cuda": TargetOverrides(transcendental_flops=16.0),
    "npu-example": TargetOverrides(
        transcendental_flops=1.0,
        absorb=MappingProxyType({"Relu": frozenset({"Conv", "MatMul", "Gemm"})})),
    "host": TargetOverrides(absorb=TVM_CPU_FUSION),
})


def overrides_for(target: Target, table: Mapping[str, TargetOverrides] = BUILTIN,
                  ) -> TargetOverrides:
    """The overrides of ``target``: its kind's, then its name's on top."""
    return overrides_for_keys((target.kind, target.name), table)


def overrides_for_keys(keys: tuple[str, ...], table: Mapping[str, TargetOverrides] = BUILTIN,
                       ) -> TargetOverrides:
    """The entries of ``keys`` in ``table`` merged, later keys winning."""
    found = TargetOverrides()
    for key in keys:
        if key in table:
            found = found.merged(table[key])
    return found
