"""Latency of a candidate assignment: pluggable, from the ``PassContext`` when it can say.

In order of preference:

1. an analysis registered as ``"latency"`` in ``ctx.analyses``: ``fn(graph, ctx)``
   returning seconds, or a record with ``latency_s`` (a measured or learned model);
2. ``ctx.target`` set: the roofline model, ``optc.cost.roofline.RooflineModel().estimate(
   graph, target).latency_s`` on the emitted graph;
3. otherwise a documented proxy (``proxy_latency``): weight bytes moved at a nominal
   100 GB/s plus multiply-accumulates at a nominal 1e12 MAC/s in float32, twice that in
   float16 and four times that with 8-bit activations (integer kernels). Only its
   ratios matter: it ranks assignments, it does not predict a device.

A model that cannot price the fp32 graph (the roofline needs static shapes) is replaced
by the proxy, with a warning, for every assignment, so all are priced alike.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from optc.errors import OptcError
from optc.ir.graph import Graph
from optc.pipeline import PassContext
from optc.quant.layers import Layer
from optc.quant.numerics import FP32, LayerPrecision

log = logging.getLogger(__name__)

LatencyFn = Callable[[Graph, Mapping[str, LayerPrecision]], float]
"""``latency(emitted graph, assignment) -> seconds``."""

PROXY_BANDWIDTH = 100e9
PROXY_MACS = {32: 1e12, 16: 2e12, 8: 4e12}  # MAC/s by activation bits


def proxy_latency(layers: Sequence[Layer]) -> LatencyFn:
    """The proxy over ``layers`` (other nodes cost the same in every assignment)."""
    def latency(graph: Graph, assignment: Mapping[str, LayerPrecision]) -> float:
        total = 0.0
        for layer in layers:
            precision = assignment.get(layer.key, FP32)
            total += layer.weight_elements * precision.weight_bits / 8 / PROXY_BANDWIDTH
            total += layer.macs / PROXY_MACS[precision.act_bits]
        return total

    return latency


def latency_model(ctx: PassContext, layers: Sequence[Layer],
                  graph: Graph) -> tuple[LatencyFn, str]:
    """The latency function to use and a name for reports; the model is tried on the fp32
    ``graph`` first so that all assignments are priced by the same one."""
    proxy = proxy_latency(layers)
    if "latency" in ctx.analyses:
        return _checked(lambda g: _seconds(ctx.analysis("latency", g)), proxy, graph,
                        "ctx.analyses['latency']")
    if ctx.target is not None:
        try:
            from optc.cost.roofline import RooflineModel
        except ImportError:  # the cost package is optional for this pass
            log.warning("mixed-precision: no roofline model available; using the proxy")
            return proxy, "proxy"
        model, target = RooflineModel(), ctx.target
        name = getattr(target, "name", str(target))
        return _checked(lambda g: model.estimate(g, target).latency_s, proxy, graph,
                        f"roofline({name})")
    return proxy, "proxy"


def _checked(estimate: Callable[[Graph], float], proxy: LatencyFn, graph: Graph,
             name: str) -> tuple[LatencyFn, str]:
    try:
        float(estimate(graph))
    except OptcError as exc:
        log.warning("mixed-precision: %s cannot price the model (%s); ranking assignments "
                    "with the proxy instead", name, exc)
        return proxy, "proxy"
    return (lambda g, _assignment: float(estimate(g))), name


def _seconds(result: Any) -> float:
    return float(getattr(result, "latency_s", result))
