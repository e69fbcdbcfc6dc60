"""Roofline rules for the onnxruntime contrib ops the ``fuse`` pass emits.

Keyed ``"com.microsoft::<op>"`` so they cannot be confused with default-domain ops.
``Attention`` is one kernel: it reads ``x``, the packed weights, the bias and the mask
once and writes only its output; the Q/K/V projections, scores and probabilities stay
inside (what a single-op attention kernel such as FlashAttention achieves).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

from optc.cost.rules.elementwise import gelu
from optc.cost.work import NodeView, Work
from optc.interp.rules.contrib import CONTRIB_DOMAIN

SOFTMAX_FLOPS = 4  # max, subtract, sum, divide per score (exp counted separately)


def attention(view: NodeView) -> Work:
    batch, seq, width = view.in_shape(0)
    packed = view.in_shape(1)[1]
    heads = int(view.node.attr("num_heads", 1))
    hidden = packed // 3
    projections = 2 * batch * seq * width * packed + batch * seq * packed
    scores = batch * heads * seq * seq
    head_size = hidden // max(heads, 1)
    products = 2 * 2 * scores * head_size  # Q K^T and P V
    return view.work(projections + products + SOFTMAX_FLOPS * scores, transcendentals=scores,
                     op_class="matmul")


def bias_gelu(view: NodeView) -> Work:
    base = gelu(view)
    return Work(flops=base.flops + view.out_numel(0), transcendentals=base.transcendentals,
                reads=base.reads, writes=base.writes, op_class=base.op_class)


RULES: Mapping[str, Callable[[NodeView], Work]] = MappingProxyType({
    f"{CONTRIB_DOMAIN}::Attention": attention,
    f"{CONTRIB_DOMAIN}::Gelu": gelu,
    f"{CONTRIB_DOMAIN}::FastGelu": bias_gelu,
    f"{CONTRIB_DOMAIN}::BiasGelu": bias_gelu,
})
"""``domain::op`` -> roofline rule (see the module docstring)."""
