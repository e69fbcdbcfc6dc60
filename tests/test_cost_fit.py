"""Fitting per-op-class efficiencies to measured latencies."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper
from test_cost_rules import graph

from optc.cost import RooflineModel, calibration
from optc.cost.calibration import Calibration
from optc.cost.fit import Sample, fit_efficiency, fit_host, mape, roofline_features
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


def fc(inputs: int, outputs: int, batch: int = 1) -> Graph:
    """A fully connected layer: at batch 1 its weights stream from memory, at 64 it is
    bound by compute."""
    return graph([helper.make_node("Gemm", ["x", "w"], ["y"], "fc", transB=1)],
                 [("x", F32, [batch, inputs])], ["y"],
                 {"w": np.ones((outputs, inputs), np.float32)})


def test_fit_host_recovers_the_bandwidth_weights_stream_at() -> None:
    pi = get_target("rasp4b")  # no cache figures: every weight comes from memory
    truth = pi.with_measurements({"memory_bandwidth": pi.bandwidth() * 0.41}, "test") \
        .with_efficiency({"conv": 0.3, "matmul": 0.6}, source="test")
    graphs = [conv_relu(16, 56), conv_relu(64, 28), conv_relu(32, 14, relu=False),
              fc(2048, 1024), fc(1024, 4096), fc(1024, 1024, 64), fc(512, 2048, 64)]
    samples = [Sample(g, RooflineModel().estimate(g, truth).latency_s) for g in graphs]
    found = fit_host(samples, pi)
    assert found.figures["memory_bandwidth"] == pytest.approx(pi.bandwidth() * 0.41)
    assert found.efficiency["conv"] == pytest.approx(0.3, rel=1e-3)
    assert found.error < 1e-6
    assert found.efficiency["matmul"] == pytest.approx(0.6, rel=1e-3)
    # one matmul efficiency cannot price both weight streaming and compute: worse fit
    assert found.error < fit_host(samples, pi, fractions=(1.0,)).error


def test_fitted_bandwidth_is_stored_and_replaces_the_measured_one(tmp_path: Path) -> None:
    entry = Calibration(
        key=calibration.host_key(), cpu_model=calibration.cpu_model(), cores=2,
        tvm_target={"kind": "llvm", "num-cores": 2},
        figures={"peak_flops.float32": 1e11, "peak_flops.int8": 1e9, "memory_bandwidth": 2e10,
                 "cache_bandwidth": 6e10, "cache_size": 3.2e7, "launch_overhead": 2e-6},
        measured_at="2026-01-01T00:00:00+00:00", quick=True)
    calibration.save_calibration(entry, calibration.cache_path(tmp_path))
    saved = calibration.save_efficiency({"conv": 0.5}, "fit on 3 models", tmp_path,
                                        figures={"memory_bandwidth": 7e9})
    assert saved.figures["memory_bandwidth"] == 2e10  # the measurement is kept
    host = get_target("host", cache_dir=tmp_path)
    assert host.bandwidth() == 7e9
    assert "fitted" in host.sources["memory_bandwidth"]
    assert host.cache() == (3.2e7, 6e10) and host.peak("float32") == 1e11
    assert calibration.measured_target(host, tmp_path).bandwidth() == 2e10  # a new fit's start
    # a new fit without figures drops the old fitted ones
    calibration.save_efficiency({"conv": 0.5}, "fit on 3 models", tmp_path)
    assert get_target("host", cache_dir=tmp_path).bandwidth() == 2e10
    with pytest.raises(UserInputError, match="no measured figure"):
        calibration.save_efficiency({}, "x", tmp_path, figures={"peak_bandwidth": 1.0})
