"""The requantize epilogues optc emits: vectorized, and bit for bit ONNX QuantizeLinear as
the lowering computes it (times the reciprocal, ties to even, saturated).

- ``round`` (TIR ``nearbyint``) stays vectorized: TVM 0.27 leaves it out of its
  vectorizable ops, which turned every requantize epilogue into a scalar loop
  (``schedules.loops.vectorizable_nearbyint``);
- a ReLU / Clip before an activation ``quantize`` folds into the codes' clamp
  (``quantized._Resolving.codes``): same codes, two fewer operations per element.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import optc

tvm = pytest.importorskip("tvm")
from optc.codegen.build import build  # noqa: E402  (needs TVM)
from optc.codegen.host_cpu import host_target  # noqa: E402
from optc.codegen.relax_pipeline import default_schedule  # noqa: E402
from optc.codegen.schedules.loops import vectorizable_nearbyint  # noqa: E402


def test_nearbyint_loop_vectorizes() -> None:
    """TVM's ``VectorizeLoop`` widens a loop that rounds (it scalarized it before)."""
    from tvm.script import tirx as T

    @T.prim_func(s_tir=True)
    def rounds(a: T.Buffer((8,), "float32"), b: T.Buffer((8,), "float32")) -> None:
        for i in T.vectorized(8):
            b[i] = T.nearbyint(a[i] * T.float32(0.5))

    vectorizable_nearbyint()
    lowered = tvm.tirx.transform.VectorizeLoop()(tvm.IRModule({"main": rounds}))
    text = lowered.script()
    assert "nearbyint" in text
    assert "for " not in text  # one vector statement, no scalar fallback loop


def clip_quantize_model(
    low: float, high: float, scale: float, zero: int, folder: Path
) -> optc.Graph:
    """``y = DequantizeLinear(QuantizeLinear(Clip(x, low, high)))`` as ONNX, as a QDQ model
    has it after a ReLU6 (the importer's ``Clip`` becomes TIR maximum / minimum)."""
    shape = [1, 16, 8, 8]
    nodes = [
        helper.make_node("Clip", ["x", "low", "high"], ["c"]),
        helper.make_node("QuantizeLinear", ["c", "s", "z"], ["q"]),
        helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"]),
    ]
    inits = [
        helper.make_tensor("low", TensorProto.FLOAT, [], [low]),
        helper.make_tensor("high", TensorProto.FLOAT, [], [high]),
        helper.make_tensor("s", TensorProto.FLOAT, [], [scale]),
        helper.make_tensor("z", TensorProto.UINT8, [], [zero]),
    ]
    graph = helper.make_graph(
        nodes,
        "clip_quantize",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
        inits,
    )
    path = folder / "clip_quantize.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return optc.load_onnx(path)


@pytest.mark.parametrize(
    ("scale", "zero"),
    [
        (0.25, 0),  # x * 4 lands on k + 0.5: ties to even; 6 -> code 24
        (6.0 / 255.0, 0),  # the clip's whole range: 6 -> 255 (or just above it)
        (0.05, 10),  # the clip inside the codes: clamp to [10, 130]
        (0.01, 200),  # the clip beyond the codes: 6 -> 800, saturated at 255
    ],
)
def test_clip_folds_into_the_quantize_clamp_bit_for_bit(
    scale: float, zero: int, tmp_path: Path
) -> None:
    """``quantize(clip(x, 0, 6))`` computes ``clamp(round(x / s) + z, max(0, g(0)),
    min(255, g(6)))``: the codes of the unfolded formula for every input, ties, values
    beyond both bounds and beyond the codes included, and no separate clip in the
    kernel."""
    rng = np.random.default_rng(zero)
    x = (rng.standard_normal((1, 16, 8, 8)) * 5).astype(np.float32)
    flat = x.reshape(-1)
    flat[:64] = (np.arange(64, dtype=np.float32) - 20.5) / np.float32(4)  # ties at s = 0.25
    flat[64:72] = [0.0, -0.0, 6.0, 5.999999, 6.000001, -1e30, 1e30, 3.0]

    seen: dict[str, str] = {}

    def schedule(mod: tvm.IRModule, target: tvm.target.Target) -> tvm.IRModule:
        out = default_schedule(mod, target)
        seen["tir"] = out.script()
        return out

    graph = clip_quantize_model(0.0, 6.0, scale, zero, tmp_path)
    built = build(graph, host_target(2), schedule=schedule, fuse=True)
    vm = tvm.relax.VirtualMachine(built.executable, tvm.cpu())
    got = vm["main"](tvm.runtime.tensor(x)).numpy()

    s = np.float32(scale)
    codes = np.clip(np.round(np.clip(x, 0, 6) * (np.float32(1) / s)) + zero, 0, 255)
    want = (codes - zero).astype(np.float32) * s
    np.testing.assert_array_equal(got, want)
    # one clamp: the clip's max / min went into the codes' bounds
    assert seen["tir"].count("T.max(") == 1 and seen["tir"].count("T.min(") == 1
