"""fuse: fold, fuse and group nodes into the kernels the code generator will emit."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import ClassVar

from optc.errors import UserInputError
from optc.fusion import DEFAULT_FAMILIES, FAMILIES, FusionReport, fuse
from optc.ir.graph import Graph
from optc.pipeline import Pass, PassContext

REWRITE_FREE = ("batchnorm", "epilogue", "elementwise")


@dataclasses.dataclass(frozen=True)
class Fuse(Pass):
    """Fuse Conv/Gemm/MatMul epilogues, GELU, attention and elementwise chains into kernels.

    Exact up to float rounding. The grouping rules are those of TVM's FuseOps ("TVM: An
    Automated End-to-End Optimizing Compiler", Chen et al., OSDI 2018, sec. 3): an
    anchor (Conv, Gemm, MatMul) takes the elementwise ops after it (bias, ReLU, Clip /
    ReLU6, GELU, SiLU, HardSwish, residual Add), a softmax the elementwise ops after
    it, and injective / elementwise chains fuse with each other. Attention
    (MatMul-scale-mask-Softmax-MatMul with its Q/K/V projections) becomes one
    single-op attention kernel in the spirit of FlashAttention (Dao et al., NeurIPS
    2022): onnxruntime's contrib ``com.microsoft.Attention``, which TVM imports as one
    ``R.nn.attention``. Decomposed erf GELU joins its MatMul's epilogue; with the
    ``gelu`` family (off by default: TVM's exact-erf ``Gelu`` is slower on CPUs than its
    fast erf in the decomposed form) it becomes one ``Gelu`` (standard from opset 20,
    else ``com.microsoft.Gelu``). BatchNormalization is folded by the
    ``fold-batchnorm`` pass. Each decision is scored with the roofline cost model of
    ``ctx.target`` (intermediate bytes no longer written and read, launches saved;
    ``optc.fusion.score``) and kept when it saves more than ``min-saving-us``; kept
    groups carry a ``FusionGroup`` annotation, which the roofline prices as one kernel.

    Ordering: run ``fold-constants`` first, so that weights, BatchNormalization
    statistics, reshape shapes and scales are params; attention needs static shapes
    (the graph inputs static is enough). Run it after passes that change the graph's
    structure (quantization) so that the groups describe the final kernels.

    Options: ``families`` (which fusions to apply: batchnorm, gelu, attention,
    epilogue, elementwise; default all but gelu), ``min-saving-us`` (the smallest
    predicted saving to fuse).

    Before -> after (``families`` with gelu)::

        %m = MatMul(%x, %w)                 %m = MatMul(%x, %w)  [fusion: fused0]
        %a = Add(%m, %b)                    %a = Add(%m, %b)     [fusion: fused0]
        %d = Div(%a, 1.4142)          ->    %y = Gelu(%a)        [fusion: fused0]
        %e = Erf(%d)
        %p = Add(%e, 1.0)
        %h = Mul(%a, %p)
        %y = Mul(%h, 0.5)
    """

    name: ClassVar[str] = "fuse"
    exact: ClassVar[bool] = True
    families: tuple[str, ...] = dataclasses.field(default=DEFAULT_FAMILIES, metadata={
        "help": "fusions to apply, any of: " + ", ".join(FAMILIES)})
    min_saving_us: float = dataclasses.field(default=0.0, metadata={
        "help": "fuse only where the cost model predicts a saving above this, microseconds"})

    def __post_init__(self) -> None:
        unknown = sorted(set(self.families) - set(FAMILIES))
        if unknown:
            raise UserInputError(f"fuse: unknown families {unknown}; valid: {', '.join(FAMILIES)}")

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        report = FusionReport()
        after = fuse(graph, self.families, ctx.target, self.min_saving_us * 1e-6, report)
        ctx.logger.debug("fuse: %s, %d rejected, predicted saving %.1f us, %d launches",
                         report.counts, report.rejected, report.saved_s * 1e6,
                         report.launches_saved)
        return after

    def candidates(self, graph: Graph, ctx: PassContext) -> Iterator[Fuse]:
        """The default, everything (GELU as one op too), and the rewrite-free variant
        (BatchNorm folds and groups only): which is fastest depends on how well the
        target's code generator runs the fused ops, so the search should measure them."""
        for families in (DEFAULT_FAMILIES, FAMILIES, REWRITE_FREE):
            yield Fuse(families=families, min_saving_us=self.min_saving_us)
