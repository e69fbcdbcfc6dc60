"""Layer sensitivities: Hutchinson Hessian traces, augmented with inter-layer dependencies.

Hessian part (HAWQ-v2, Dong et al. 2020, the base of Schaefer et al. 2023): for layer
``i`` with weights ``W_i`` (``n_i`` elements) quantized to precision ``p``,

    Omega_i(p) = Tr(H_ii) / n_i * ||Q_p(W_i) - W_i||^2,

``Tr(H_ii)`` estimated with Hutchinson's method, ``E[v^T H_ii v]`` over Rademacher ``v``,
Hessian-vector products by double backprop through ``optc.interp.run`` with the weights
passed as ``params`` overrides. ``Omega_i / 2`` is the second-order Taylor estimate of
the loss increase of quantizing ``W_i`` alone.

Dependency part: the diagonal block misses what happens when a layer is quantized
*together with* the layers it feeds and is fed by (its neighbors ``N_i``): the cross
blocks ``dW_i^T H_ij dW_j``, and the activation quantization the weight Hessian cannot
see. Both are measured on the emitted graph: ``dL(S)`` is the calibration-loss increase
when the layers ``S`` are lowered (others unchanged), and the augmented sensitivity is

    S_i(p) = Omega_i(p) / 2 + 1/2 [ dL({i}) + (dL({i} + N_i) - dL(N_i)) ],

the layer's extra loss averaged over the two contexts that matter to a prefix search,
neighbors unchanged and neighbors quantized too (its Shapley value in the game
{layer, neighbors}). Measured alternatives, on EfficientNet-Lite0 (fidelity on held-out
photo crops, 5-point sweeps of the number of lowered layers, w4a16 and w8a8): adding the
bare interaction ``dL({i} + N_i) - dL(N_i) - dL({i})`` made the order *worse* than the
plain Hessian (sub-additive, saturating losses give sensitive layers negative
interactions); the attributed share above beat the plain order at both widths
(``benchmarks/mixed_precision_order.py``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch

from optc.ir.graph import Graph
from optc.quant.evaluate import Evaluator, symbolic_batch
from optc.quant.layers import Layer
from optc.quant.numerics import LayerPrecision, weight_error

Assignment = Mapping[str, LayerPrecision]
LossOf = Callable[[Assignment], float]


@dataclasses.dataclass(frozen=True)
class Trace:
    """Hutchinson estimate of ``Tr(H_i)`` and its standard error."""

    value: float
    stderr: float


def hutchinson_traces(evaluator: Evaluator, graph: Graph, layers: Sequence[Layer],
                      samples: int, seed: int = 0, groups: int | None = None,
                      ) -> dict[str, Trace]:
    """``Tr(H_i)`` of the calibration loss w.r.t. each layer's weight, by layer key.

    Layers are dealt into ``groups`` interleaved groups (layer ``i`` in group
    ``i % groups``; None: one group per layer) and each sample takes one Hessian-vector
    product per group, with ``v`` zero outside the group: ``v_i^T (H v)_i`` then carries
    cross terms only with layers of the same group, at least ``groups`` layers apart.
    One group for all layers is the cheapest (one product per sample), but on
    EfficientNet-Lite0 its cross terms swamped the diagonal blocks: with 8 samples half
    the traces came out negative, which put the stem first in the order.
    """
    batched = symbolic_batch(graph)
    weights = [torch.tensor(np.array(graph.params[layer.weight]), requires_grad=True)
               for layer in layers]
    overrides = {layer.weight: w for layer, w in zip(layers, weights, strict=True)}
    total = evaluator.calibration.size
    per_sample = np.zeros((samples, len(layers)))
    for part, feeds in evaluator.chunks():
        out = evaluator.forward(batched, feeds, params=overrides,
                                outputs=[evaluator.output])[evaluator.output]
        share = (part.stop - part.start) / total  # the loss is a mean over samples
        loss = evaluator.loss(out.float(), part) * share
        grads = torch.autograd.grad(loss, weights, create_graph=True)
        for s in range(samples):
            # The same v for sample s in every chunk: sum_c v^T H_c v = v^T H v.
            vs = rademacher(weights, seed * 100_003 + s)
            for members in _groups(grads, groups):
                hvs = torch.autograd.grad([grads[i] for i in members],
                                          [weights[i] for i in members],
                                          grad_outputs=[vs[i] for i in members],
                                          retain_graph=True, allow_unused=True)
                for i, hv in zip(members, hvs, strict=True):
                    if hv is not None:
                        per_sample[s, i] += float((hv * vs[i]).sum())
    means = per_sample.mean(axis=0)
    errs = per_sample.std(axis=0, ddof=1) / np.sqrt(samples) if samples > 1 else \
        np.full(len(layers), np.inf)
    return {layer.key: Trace(float(m), float(e))
            for layer, m, e in zip(layers, means, errs, strict=True)}


def _groups(grads: Sequence[torch.Tensor], groups: int | None) -> list[list[int]]:
    """Interleaved groups of the layers whose gradient depends on the weights (the loss
    is linear in the others: their Hessian block is zero)."""
    curved = [i for i, grad in enumerate(grads) if grad.requires_grad]
    count = len(curved) if groups is None else max(1, min(groups, len(curved)))
    return [curved[start::count] for start in range(count) if curved[start::count]]


def rademacher(like: Sequence[torch.Tensor], seed: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 2, t.shape, generator=generator).to(t.dtype) * 2 - 1
            for t in like]


def hessian_scores(graph: Graph, layers: Sequence[Layer], traces: Mapping[str, float],
                   precision: LayerPrecision, int8_code_bits: int = 8,
                   half_dtype: str = "float16") -> dict[str, float]:
    """``Omega_i(p) / 2``: the Hessian estimate of each layer's loss increase at ``p``.

    A negative trace estimate counts as 0: near a minimum the diagonal blocks are
    positive semi-definite, so a negative value is estimator noise around a small trace.
    """
    scores = {}
    for layer in layers:
        weight = graph.params[layer.weight]
        error = weight_error(weight, precision, layer.channel_axis, int8_code_bits,
                             half_dtype)
        scores[layer.key] = 0.5 * max(traces[layer.key], 0.0) / weight.size * error
    return scores


@dataclasses.dataclass(frozen=True)
class Dependency:
    """Measured loss increases (over the base assignment) for one layer at one precision:
    alone, of its neighbors alone, and of both together."""

    alone: float
    neighbors: float
    joint: float

    @property
    def together(self) -> float:
        """The extra loss of the layer when its neighbors are quantized with it."""
        return self.joint - self.neighbors

    @property
    def interaction(self) -> float:
        """The part of the joint loss the two separate losses do not explain."""
        return self.joint - self.neighbors - self.alone

    @property
    def attributed(self) -> float:
        """The layer's share of the joint loss: its extra loss averaged over the two
        contexts, neighbors unchanged (alone) and neighbors quantized (together) -- the
        Shapley value of the layer in the two-player game {layer, neighbors}."""
        return 0.5 * (self.alone + self.together)


def dependency_terms(keys: Sequence[str], neighbors: Mapping[str, Sequence[str]],
                     base: Assignment, precision: LayerPrecision,
                     loss_of: LossOf) -> dict[str, Dependency]:
    """For each layer in ``keys``: the loss of quantizing it to ``precision`` with the
    neighbors among ``keys`` (those it feeds and is fed by), versus alone.

    ``loss_of`` measures an assignment on the emitted graph; ``base`` holds every other
    layer at its current precision. A layer without neighbors in ``keys`` has no
    interaction (its joint loss is its loss alone).
    """
    eligible = set(keys)
    cache: dict[frozenset[str], float] = {}

    def increase(group: frozenset[str]) -> float:
        if group not in cache:
            trial = dict(base)
            trial.update({key: precision for key in group})
            cache[group] = loss_of(trial) - reference
        return cache[group]

    reference = loss_of(base)
    found = {}
    for key in keys:
        near = frozenset(k for k in neighbors.get(key, ()) if k in eligible and k != key)
        alone = increase(frozenset({key}))
        if not near:
            found[key] = Dependency(alone, 0.0, alone)
            continue
        found[key] = Dependency(alone, increase(near), increase(near | {key}))
    return found


def augmented_scores(hessian: Mapping[str, float],
                     dependencies: Mapping[str, Dependency]) -> dict[str, float]:
    """The Hessian estimate augmented with the measured, dependency-aware loss share of
    each layer (``Dependency.attributed``)."""
    return {key: value + (dependencies[key].attributed if key in dependencies else 0.0)
            for key, value in hessian.items()}


def sensitivity_order(scores: Mapping[str, float], keys: Sequence[str]) -> list[str]:
    """``keys`` from least to most sensitive (ties keep graph order)."""
    position = {key: i for i, key in enumerate(keys)}
    return sorted(keys, key=lambda k: (scores[k], position[k]))
