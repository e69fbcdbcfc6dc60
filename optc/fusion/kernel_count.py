"""Count the kernels TVM generated: what the fusion pass is checked against.

A Relax VM executable's bytecode (``executable.as_text()``) calls each generated
PrimFunc by name (``call  fused_matmul_add2 in: ...``) next to runtime builtins
(``vm.builtin.alloc_tensor``) and library kernels. The distinct generated names are
the kernels TVM compiled; the number of calls is the launches one inference makes.
"""

from __future__ import annotations

import collections
import dataclasses
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from optc.ir.graph import Graph
from optc.target import Target

_CALL = re.compile(r"^\s*call\s+(\S+)\s+in:", re.MULTILINE)
_RUNTIME_PREFIXES = ("vm.builtin.", "vm.", "relax.", "runtime.", "tvm.contrib.")


def kernel_calls(executable: Any) -> collections.Counter[str]:
    """Generated kernel name -> calls per inference, from a Relax VM executable."""
    text = executable.as_text()
    names = (name for name in _CALL.findall(text) if not name.startswith(_RUNTIME_PREFIXES))
    return collections.Counter(names)


def kernel_summary(executable: Any) -> dict[str, int]:
    """``{"kernels": distinct PrimFuncs called, "launches": calls per inference}``."""
    calls = kernel_calls(executable)
    return {"kernels": len(calls), "launches": sum(calls.values())}


@dataclasses.dataclass(frozen=True)
class KernelComparison:
    """Kernels the roofline model prices (fusion groups as one) against TVM's launches."""

    predicted: int
    generated: int
    distinct: int
    by_name: Mapping[str, int]

    @property
    def difference(self) -> int:
        """TVM launches the roofline did not predict (negative: predicted, not made)."""
        return self.generated - self.predicted


def compare(graph: Graph, executable: Any, target: Target) -> KernelComparison:
    """How many kernels the roofline model predicts for ``graph`` on ``target`` and how
    many the compiled ``executable`` launches per inference.

    Known differences on the CPU: optc's preparation adds layout kernels (``transpose``,
    ``transpose1``) turning an NCHW input channels-last and a 4-D output back; TVM
    lowers ``com.microsoft.Attention`` to the packed QKV projection, a split and the
    attention kernel (three launches, one predicted); a ``Gather`` gets an
    index-normalizing kernel of its own.
    """
    from optc.cost.roofline import RooflineModel  # deferred: the cost package is large

    calls = kernel_calls(executable)
    predicted = RooflineModel().estimate(graph, target).launches
    return KernelComparison(predicted, sum(calls.values()), len(calls),
                            MappingProxyType(dict(calls)))
