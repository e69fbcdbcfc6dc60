"""onnxruntime's per-kernel profile of a graph (``optc.latency.kernel_profile``)."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from scipy.stats import spearmanr

from optc.errors import UserInputError
from optc.latency.arch import ArchSpec
from optc.latency.kernel_profile import (
    KernelProfile,
    KernelTime,
    _profile,
    kernel_flops,
    profile_onnxruntime,
    profile_tvm,
)

CNN = {
    "resolution": 32, "stem": 8, "stem_kernel": 3, "maxpool": False, "pool": "avg",
    "act": "relu", "classes": 10,
    "blocks": [["conv", 3, 2, 16, 1], ["dw", 3, 1, 16, 1], ["conv", 1, 1, 32, 1]],
}  # fmt: skip


@pytest.fixture(scope="module")
def profile() -> KernelProfile:
    return profile_onnxruntime(ArchSpec("cnn", CNN, 0).build(), runs=5, warmup=2)


def test_profile_names_the_kernels_that_ran(profile: KernelProfile) -> None:
    ops = [k.op for k in profile.kernels]
    # Five convolutions (the stem, the 3x3 block, the dw block's depthwise and pointwise,
    # the 1x1 block), in onnxruntime's own names: fused with their ReLU or not,
    # depending on its layout choice.
    assert sum("Conv" in op for op in ops) == 5, ops
    assert any("Gemm" in op or "MatMul" in op for op in ops), ops  # the classifier
    stem = next(k for k in profile.kernels if "Conv" in k.op and k.inputs[0][1] == 3)
    assert stem.inputs[0] == (1, 3, 32, 32)
    # 8 output channels, 3x3; onnxruntime's blocked layout pads the 8 to its SIMD block
    # (16 with AVX-512): the profile shows the weights as they ran.
    assert stem.inputs[1][1:] == (3, 3, 3) and stem.inputs[1][0] in (8, 16)
    assert stem.parameter_bytes >= 8 * 3 * 3 * 3 * 4


def test_kernel_times_are_positive_and_fit_inside_a_run(profile: KernelProfile) -> None:
    assert all(k.seconds >= 0 for k in profile.kernels)
    assert profile.kernel_sum_s > 0
    # Every kernel runs inside the run; the run adds the session's own overhead.
    assert profile.kernel_sum_s <= profile.run_s * 1.05
    assert profile.run_s < 0.1  # a 32x32 CNN: well under 100 ms, whatever the machine


def test_flops_of_convolution_and_matrix_kernels() -> None:
    conv = KernelTime("c", "FusedConv", ((1, 8, 16, 16), (16, 8, 3, 3), (16,)),
                      ((1, 16, 16, 16),), 0, 1e-5)  # fmt: skip
    assert kernel_flops(conv) == 2 * 16 * 16 * 16 * 8 * 3 * 3
    gemm = KernelTime("g", "Gemm", ((4, 64), (10, 64), (10,)), ((4, 10),), 0, 1e-6)
    assert kernel_flops(gemm) == 2 * 4 * 10 * 64
    relu = KernelTime("r", "Relu", ((2, 3, 5),), ((2, 3, 5),), 0, 1e-7)
    assert kernel_flops(relu) == math.prod((2, 3, 5))
    # TVM's NHWC kernels: HWIO weights, and packed (O / o, H, W, I, o) ones.
    hwio = KernelTime("t", "fused_conv2d1_add", ((1, 56, 56, 32), (1, 1, 32, 24)),
                      ((1, 56, 56, 24),), 0, 1e-5)  # fmt: skip
    assert kernel_flops(hwio) == 2 * 56 * 56 * 24 * 32
    packed = KernelTime("p", "fused_conv2d_packed1_add", ((1, 56, 56, 24), (3, 1, 1, 24, 48)),
                        ((1, 56, 56, 144),), 0, 1e-5)  # fmt: skip
    assert kernel_flops(packed) == 2 * 56 * 56 * 144 * 24
    depthwise = KernelTime("d", "fused_conv2d2_add4", ((1, 56, 56, 144), (3, 3, 1, 144)),
                           ((1, 28, 28, 144),), 0, 1e-5)  # fmt: skip
    assert kernel_flops(depthwise) == 2 * 28 * 28 * 144 * 9


def test_tvm_profile_times_optc_builds_kernels() -> None:
    """The same kind of profile from optc's TVM build: its fused functions, the NHWC
    shapes they ran on, and a sum inside the run (the run adds the VM's own calls)."""
    wider = {**CNN, "resolution": 64, "stem": 32,
             "blocks": [["conv", 3, 1, 32, 1], ["conv", 3, 1, 64, 1]]}  # fmt: skip
    found = profile_tvm(ArchSpec("cnn", wider, 0).build(), runs=5, warmup=2)
    convs = [k for k in found.kernels if "conv2d" in k.op]
    assert convs, [k.op for k in found.kernels]
    assert not any(k.op[-1].isdigit() for k in found.kernels)  # variant numbers dropped
    assert convs[0].inputs[0] == (1, 64, 64, 3)  # the stem reads the NHWC image
    assert all(k.seconds > 0 for k in found.kernels)
    assert 0 < found.kernel_sum_s <= found.run_s


def test_profile_takes_the_median_after_warmup() -> None:
    def node(dur: int) -> dict:
        args = {"op_name": "Relu", "input_type_shape": [{"float": [1, 4]}],
                "output_type_shape": [{"float": [1, 4]}], "parameter_size": "0"}  # fmt: skip
        return {"cat": "Node", "name": "r_kernel_time", "dur": dur, "args": args}

    def run(dur: int) -> dict:
        return {"cat": "Session", "name": "model_run", "dur": dur}

    events = [node(1000), run(2000), node(3), run(10), node(5), run(12), node(4), run(11)]
    found = _profile(events, skip=1)
    assert found.kernels == (KernelTime("r", "Relu", ((1, 4),), ((1, 4),), 0, 4e-6),)
    assert found.run_s == pytest.approx(11e-6)


def test_bad_run_counts_and_empty_traces_are_refused() -> None:
    with pytest.raises(UserInputError, match="runs >= 1"):
        profile_onnxruntime(ArchSpec("cnn", CNN, 0).build(), runs=0)
    with pytest.raises(UserInputError, match="no model run"):
        _profile([], skip=0)


def ceiling_benchmark() -> ModuleType:
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "latency_ceiling.py"
    spec = importlib.util.spec_from_file_location("latency_ceiling", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_kernel_oracle_maps_kernel_sums_to_runs() -> None:
    """``benchmarks/latency_ceiling.py``'s kernel oracle on real profiles of six small
    CNNs: trees fitted on their kernels, the sum mapped to the runs' medians. Its own
    measured kernels map back within 25 % (the map is two numbers for six graphs), and
    the trees' sums rank the graphs as their runs do."""
    bench = ceiling_benchmark()
    specs = [
        ArchSpec("cnn", {**CNN, "resolution": r, "stem": s}, 0)
        for r, s in ((32, 8), (48, 8), (64, 16), (96, 16), (128, 24), (160, 32))
    ]
    profiles = [profile_onnxruntime(spec.build(), runs=20, warmup=5) for spec in specs]
    runs = np.array([p.run_s for p in profiles])
    oracle = bench.KernelOracle(profiles, runs)
    mapped = oracle.predict(profiles, measured=True)
    assert np.all(np.abs(mapped / runs - 1) < 0.25), (mapped, runs)
    predicted = oracle.predict(profiles)
    assert spearmanr(predicted, runs)[0] > 0.8, (predicted, runs)
    folds = bench.folds(10, 3, seed=0)
    assert sorted(np.concatenate(folds).tolist()) == list(range(10))
