"""Fitting per-op-class efficiencies to measured latencies."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper
from test_cost_rules import graph

from optc.cost import RooflineModel
from optc.cost.fit import Sample, fit_efficiency, mape, roofline_features
from optc.errors import UserInputError
from optc.ir.graph import Graph
from optc.target import get_target

F32 = TensorProto.FLOAT


def conv_relu(channels: int, size: int, relu: bool = True) -> Graph:
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], "conv", pads=[1, 1, 1, 1])]
    nodes += [helper.make_node("Relu", ["c"], ["y"], "relu")] if relu else []
    return graph(nodes, [("x", F32, [1, channels, size, size])], ["y" if relu else "c"],
                 {"w": np.ones((channels, channels, 3, 3), np.float32)})


def relu_only(size: int) -> Graph:
    return graph([helper.make_node("Relu", ["x"], ["y"], "relu")],
                 [("x", F32, [1, 64, size, size])], ["y"])


def test_features_add_up_to_the_prediction_at_full_efficiency() -> None:
    orin = get_target("orin")
    g = conv_relu(32, 28)
    busy, fixed = roofline_features(g, orin)
    assert set(busy) == {"conv", "elementwise"}
    assert sum(busy.values()) + fixed == pytest.approx(RooflineModel().estimate(g, orin).latency_s)


def test_fit_recovers_the_efficiencies_behind_measurements() -> None:
    orin = get_target("orin")
    truth = orin.with_efficiency({"conv": 0.2, "elementwise": 0.5}, source="test")
    graphs = [conv_relu(16, 56), conv_relu(64, 28), conv_relu(32, 14, relu=False),
              relu_only(112), relu_only(56)]
    # latencies a device with those efficiencies shows (the model is exact for them)
    samples = [Sample(g, RooflineModel().estimate(g, truth).latency_s) for g in graphs]
    fitted = fit_efficiency(samples, orin)
    assert fitted == pytest.approx({"conv": 0.2, "elementwise": 0.5}, rel=1e-3)
    tuned = orin.with_efficiency(fitted, source="fit")
    predicted = [RooflineModel().estimate(s.graph, tuned).latency_s for s in samples]
    assert mape(predicted, [s.measured_s for s in samples]) < 0.1
    untuned = [RooflineModel().estimate(s.graph, orin).latency_s for s in samples]
    assert mape(untuned, [s.measured_s for s in samples]) > 25


def test_fit_keeps_efficiencies_within_bounds() -> None:
    orin = get_target("orin")
    g = relu_only(56)
    fast = RooflineModel().estimate(g, orin).latency_s / 10  # faster than the roofline
    assert fit_efficiency([Sample(g, fast)], orin) == pytest.approx({"elementwise": 1.0})
    with pytest.raises(UserInputError, match="at least one"):
        fit_efficiency([], orin)
    with pytest.raises(UserInputError, match="positive"):
        fit_efficiency([Sample(g, 0.0)], orin)


def test_mape() -> None:
    assert mape([1.1, 0.9], [1.0, 1.0]) == pytest.approx(10.0)
    with pytest.raises(UserInputError):
        mape([1.0], [])
