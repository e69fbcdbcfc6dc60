"""Sensitivities on the bundled digits CNN: Hutchinson's trace against the exact Hessian,
Hessian scores across bit-widths, measured inter-layer dependency terms."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import optc
from optc.interp import run
from optc.ir.graph import Graph
from optc.passes.fold_batchnorm import FoldBatchNorm
from optc.pipeline import PassContext
from optc.quant import FP16, Calibration, LayerPrecision
from optc.quant.batching import symbolic_batch
from optc.quant.emit import emit
from optc.quant.evaluate import Evaluator
from optc.quant.layers import Layer, neighbors, quantizable_layers
from optc.quant.sensitivity import (
    augmented_scores,
    dependency_terms,
    hessian_scores,
    hutchinson_traces,
    sensitivity_order,
)

MODELS = Path(__file__).resolve().parent.parent / "examples" / "models"


@pytest.fixture(scope="module")
def setup() -> tuple[Graph, tuple[Layer, ...], Evaluator]:
    graph = FoldBatchNorm().run(optc.load_onnx(MODELS / "digits_cnn.onnx"), PassContext())
    data = np.load(MODELS / "digits_test.npz")
    calibration = Calibration({"input": data["input"][:64]}, data["labels"][:64])
    return graph, quantizable_layers(graph), Evaluator(graph, calibration)


def test_hutchinson_matches_the_exact_hessian_trace(setup: tuple) -> None:
    """The classifier layer (640 weights): exact Hessian by torch.autograd.functional."""
    graph, layers, evaluator = setup
    head = layers[-1]
    feeds = evaluator.calibration.inputs
    batched = symbolic_batch(graph)

    def loss(weight: torch.Tensor) -> torch.Tensor:
        out = run(batched, feeds, params={head.weight: weight})[evaluator.output]
        return evaluator.loss(out)

    weight = torch.tensor(np.array(graph.params[head.weight]))
    hessian = torch.autograd.functional.hessian(loss, weight, vectorize=True)
    exact = float(hessian.reshape(weight.numel(), -1).diagonal().sum())
    estimate = hutchinson_traces(evaluator, graph, [head], samples=256, seed=0)[head.key]
    assert exact > 0
    assert abs(estimate.value - exact) <= 4 * estimate.stderr
    assert abs(estimate.value - exact) <= 0.1 * exact
    assert estimate.stderr < 0.05 * exact


def test_grouped_products_see_cross_terms_only_within_a_group(setup: tuple) -> None:
    graph, layers, evaluator = setup
    per_layer = hutchinson_traces(evaluator, graph, layers, samples=4, seed=1)
    apart = hutchinson_traces(evaluator, graph, layers, samples=4, seed=1, groups=len(layers))
    joint = hutchinson_traces(evaluator, graph, layers, samples=4, seed=1, groups=1)
    for layer in layers:  # one layer per group is the per-layer estimator, same vectors
        assert apart[layer.key].value == pytest.approx(per_layer[layer.key].value, rel=1e-6)
    # one group for all: same expectation, but cross-layer terms move every estimate
    assert any(joint[k].value != pytest.approx(per_layer[k].value, rel=1e-3)
               for k in per_layer)


def test_hessian_scores_fall_with_more_bits(setup: tuple) -> None:
    graph, layers, evaluator = setup
    traces = {k: t.value for k, t in hutchinson_traces(evaluator, graph, layers, 8).items()}
    at = {bits: hessian_scores(graph, layers, traces, LayerPrecision(bits, 8))
          for bits in (4, 8)}
    half = hessian_scores(graph, layers, traces, FP16)
    for layer in layers:
        if traces[layer.key] > 0:
            assert at[4][layer.key] > at[8][layer.key] > half[layer.key] >= 0


def test_dependency_terms_on_digits(setup: tuple) -> None:
    graph, layers, evaluator = setup
    ranges = evaluator.value_ranges(graph, [layer.activation for layer in layers])
    keys = [layer.key for layer in layers]
    precision = LayerPrecision(4, 8)

    def loss_of(assignment: dict) -> float:
        return evaluator.measure(emit(graph, layers, assignment, ranges)).loss

    near = neighbors(graph, layers)
    found = dependency_terms(keys, near, {}, precision, loss_of)
    base = loss_of({})
    first, second = keys[0], keys[1]
    alone = loss_of({first: precision}) - base
    joint = loss_of({first: precision, second: precision}) - base
    neighbor = loss_of({second: precision}) - base
    assert found[first].alone == pytest.approx(alone)
    assert found[first].joint == pytest.approx(joint)
    assert found[first].interaction == pytest.approx(joint - neighbor - alone)
    assert found[first].together == pytest.approx(joint - neighbor)
    assert found[first].attributed == pytest.approx(0.5 * (alone + joint - neighbor))
    hessian = dict.fromkeys(keys, 1.0)
    assert augmented_scores(hessian, found)[first] == pytest.approx(
        1.0 + 0.5 * (alone + joint - neighbor))
    # restricted to one eligible layer, there is nobody to depend on
    lonely = dependency_terms([first], near, {}, precision, loss_of)[first]
    assert lonely.interaction == 0.0 and lonely.joint == lonely.alone


def test_order_is_ascending_and_stable() -> None:
    scores = {"a": 0.3, "b": 0.1, "c": 0.3, "d": -0.2}
    assert sensitivity_order(scores, ["a", "b", "c", "d"]) == ["d", "b", "a", "c"]
