"""mixed-precision: registration, cases where it must not fire, the bundled digits CNN
end to end (held-out accuracy within max-drop, onnxruntime vs interpreter, report)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from pass_support import onnxruntime_runner

import optc
from optc.errors import UserInputError
from optc.interp import run_numpy
from optc.ir.annotations import Precision
from optc.ir.graph import Graph
from optc.passes.mixed_precision import MixedPrecision
from optc.pipeline import PassContext, Pipeline, available_passes, pass_class_problems
from optc.pipeline.errors import PipelineSyntaxError
from optc.quant import LABELS, REPORT_KEY, Calibration, Options, quantize_mixed
from optc.quant.evaluate import Evaluator

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "examples" / "models"
QUICK = {"hutchinson_samples": 4, "calib_samples": 128, "sensitivity_samples": 32}


def test_registered_and_well_formed() -> None:
    assert available_passes()["mixed-precision"] is MixedPrecision
    assert pass_class_problems(MixedPrecision, "mixed-precision") == []
    assert not MixedPrecision.exact
    pipeline = Pipeline.parse("fold-batchnorm,mixed-precision{bits=4,8 act-bits=16 "
                              "max-drop=0.02 metric=agreement}")
    configured = pipeline.passes[-1]
    assert configured == MixedPrecision(max_drop=0.02, bits=(4, 8), act_bits=16,
                                        metric="agreement")
    assert str(pipeline) == ("fold-batchnorm,mixed-precision{max-drop=0.02 bits=4,8 "
                             "act-bits=16 metric=agreement}")


@pytest.mark.parametrize("text", ["mixed-precision{bits=3}", "mixed-precision{bits=2,8}",
                                  "mixed-precision{max-drop=-1}"])
def test_bad_options_are_user_errors(text: str) -> None:
    with pytest.raises(UserInputError):
        Pipeline.parse(text)


def test_act_bits_choices() -> None:
    with pytest.raises(PipelineSyntaxError, match="expected one of 8, 16"):
        Pipeline.parse("mixed-precision{act-bits=4}")


# -- must not fire ---------------------------------------------------------------------------

NO_LAYER = {
    "no conv, gemm or matmul": """
      %r: float32[1,4] = Relu(%x)
      %y: float32[1,4] = Add(%r, %x)
      output %y: float32[1,4]""",
    "weight is computed": """
      %w2: float32[4,4] = Neg(%w)
      %y: float32[1,4] = MatMul(%x, %w2)
      output %y: float32[1,4]""",
    "weight is tied": """
      %a: float32[1,4] = MatMul(%x, %w)
      %y: float32[1,4] = MatMul(%a, %w)
      output %y: float32[1,4]""",
    "constant input, not an activation": """
      %y: float32[4,4] = MatMul(%w, %w)
      output %y: float32[4,4]""",
}


@pytest.mark.parametrize("case", list(NO_LAYER))
def test_no_quantizable_layer(case: str) -> None:
    graph = optc.parse_graph('graph g {\n  opset "" = 17\n  input %x: float32[1,4]\n'
                             "  param %w: float32[4,4] = [1.0, 0.5, -1.0, 2.0, 0.0, 1.0, 1.5, "
                             "-0.5, 0.25, 1.0, 0.0, -2.0, 1.0, 1.0, 0.5, 0.75]\n"
                             + NO_LAYER[case] + "\n}")
    optc.verify(graph, types=True)
    ctx = PassContext()
    assert MixedPrecision().run(graph, ctx) is graph
    assert list(MixedPrecision().candidates(graph, ctx)) == []


# -- the bundled digits CNN --------------------------------------------------------------------

@pytest.fixture(scope="module")
def digits() -> Graph:
    from optc.passes.fold_batchnorm import FoldBatchNorm

    return FoldBatchNorm().run(optc.load_onnx(MODELS / "digits_cnn.onnx"), PassContext())


@pytest.fixture(scope="module")
def splits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The training split of the real digits (calibration) and the held-out test split."""
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        from train_digits_cnn import load_split
    finally:
        sys.path.remove(str(ROOT / "examples"))
    x_train, x_test, y_train, y_test = load_split()
    held = np.load(MODELS / "digits_test.npz")
    np.testing.assert_array_equal(held["labels"], y_test)  # the bundled split is this one
    return x_train, y_train, x_test, y_test


@pytest.fixture(scope="module")
def context(splits: tuple) -> PassContext:
    x_train, y_train, _, _ = splits
    return PassContext(calibration={"input": x_train[:128], LABELS: y_train[:128]})


def test_strict_budget_lowers_nothing(digits: Graph, context: PassContext) -> None:
    """Any quantization moves the logits: with cosine similarity and max-drop 0 nothing fits."""
    strict = MixedPrecision(max_drop=0.0, metric="cosine", **QUICK)
    assert strict.run(digits, context) is digits


@pytest.fixture(scope="module")
def quantized(digits: Graph, context: PassContext) -> tuple[Graph, object]:
    """Priced by weight bytes (a device where every lower width pays): on this CPU optc's
    int8 3x3 convolutions are slower than its float32 ones, so the host proxy rightly
    keeps the digits CNN in float32 (``test_host_proxy_keeps_spatial_convs_float``)."""
    options = Options(max_drop=0.01, bits=(4, 8, 16), act_bits=8, **QUICK)
    priced = PassContext(calibration=context.calibration,
                         analyses={"latency": packed_weight_seconds})
    return quantize_mixed(digits, priced, options)


def test_held_out_accuracy_within_max_drop(digits: Graph, splits: tuple,
                                           quantized: tuple) -> None:
    after, report = quantized
    _, _, x_test, y_test = splits
    held_out = Evaluator(digits, Calibration({"input": x_test}, y_test))
    assert held_out.baseline > 0.97  # the float model is good: the check means something
    measure = held_out.measure(after)
    assert measure.drop <= 0.01, (report.bits(), measure)
    assert report.drop <= 0.01
    assert any(layer.weight_bits < 32 for layer in report.layers)


def packed_weight_seconds(graph: Graph, _ctx: PassContext) -> float:
    """Weight bytes at 1 GB/s with each dequantized weight at its annotated bit-width."""
    bits = {node.inputs[0]: next((a.bits for a in node.outputs[0].annotations
                                  if isinstance(a, Precision)), 8)
            for node in graph.nodes if node.op == "DequantizeLinear"}
    return sum(array.size * bits.get(name, array.dtype.itemsize * 8) / 8
               for name, array in graph.params.items()) / 1e9


def test_tight_fidelity_budget_gives_a_mixed_assignment(digits: Graph, context: PassContext,
                                                        splits: tuple) -> None:
    """Cosine similarity to the fp32 logits within 1e-3: int8 everywhere fits, int4 only
    on part of the order; the held-out samples stay within the budget too. Priced for a
    device with packed 4-bit weights (optc's CPU code stores them as int8: there the int4
    step is skipped, ``test_quant_search``)."""
    packed = PassContext(calibration=context.calibration,
                         analyses={"latency": packed_weight_seconds})
    after, report = quantize_mixed(digits, packed, Options(metric="cosine", max_drop=1e-3,
                                                           int8_code_bits=8, **QUICK))
    labels = set(report.bits().values())
    assert len(labels) >= 2 and labels <= {"w8a8", "w4a8"}, report.bits()
    order = report.orders["w4a8"]  # int4 needed a sensitivity order
    lowered = [key for key in order if report.bits()[key] == "w4a8"]
    assert lowered == list(order[:len(lowered)])  # a prefix of that order
    assert all(row["scores"]["w4a8"]["score"] == pytest.approx(
        row["scores"]["w4a8"]["hessian"] + 0.5 * (row["scores"]["w4a8"]["alone"]
                                                  + row["scores"]["w4a8"]["together"]))
        for row in json.loads(report.to_json())["layers"])
    _, _, x_test, _ = splits
    held_out = Evaluator(digits, Calibration({"input": x_test}), "cosine")
    assert 0 < held_out.measure(after).drop <= 1e-3


def test_seven_bit_codes_for_a_vpmaddubsw_target(digits: Graph, context: PassContext,
                                                 splits: tuple) -> None:
    """For x86 without VNNI (``optc.quant.kernels``) the int8 layers get 7-bit codes,
    still int8 QDQ: the searched drop is the drop of what runs (held out: within the
    budget too), and the report says ``w7a8``."""
    packed = PassContext(calibration=context.calibration,
                         analyses={"latency": packed_weight_seconds})
    after, report = quantize_mixed(digits, packed, Options(bits=(8,), int8_code_bits=7,
                                                           six_bit=False, **QUICK))
    assert report is not None and report.int8_code_bits == 7
    assert set(report.bits().values()) == {"w7a8"}
    assert all(layer.weight_bits == 8 for layer in report.layers)  # stored as int8
    codes = [a for a in after.params.values() if a.dtype == np.int8]
    assert len(codes) == len(report.layers)
    assert all(c.min() >= -63 and c.max() <= 63 for c in codes)
    assert max(int(np.abs(c).max()) for c in codes) == 63  # the 7-bit range is used
    x_train, y_train, x_test, y_test = splits
    calibrated = Evaluator(digits, Calibration({"input": x_train[:128]}, y_train[:128]))
    assert report.drop == pytest.approx(calibrated.measure(after).drop)
    held_out = Evaluator(digits, Calibration({"input": x_test}, y_test))
    assert held_out.measure(after).drop <= 0.01


def test_six_bit_codes_where_the_target_runs_them_faster(digits: Graph, context: PassContext,
                                                        splits: tuple) -> None:
    """Where int8 codes are 7-bit (AVX2 ``vpmaddubsw``), 6-bit weights run on a faster
    kernel (``vnni.PMADDUBSW_PAIRS``): the search tries them below ``w7a8``, on the
    layers that took ``w7a8``, least sensitive first, and reports them as ``w6a8``
    with codes in [-31, 31]; the held-out drop stays within the budget."""
    packed = PassContext(calibration=context.calibration,
                         analyses={"latency": packed_weight_seconds})
    after, report = quantize_mixed(digits, packed, Options(bits=(8,), int8_code_bits=7,
                                                           **QUICK))
    assert report is not None
    bits = report.bits()
    assert "w6a8" in set(bits.values()) <= {"w7a8", "w6a8"}, bits
    six = [layer for layer in report.layers if layer.precision == "w6a8"]
    assert all(layer.weight_bits == 6 for layer in six)
    if "w6a8" in report.orders:  # not all of them at once: a prefix of the order
        order = report.orders["w6a8"]
        assert [k for k in order if bits[k] == "w6a8"] == list(order[:len(six)])
    codes = {name: a for name, a in after.params.items() if a.dtype == np.int8}
    narrow = [a for name, a in codes.items() if ".q6" in name]
    assert len(narrow) == len(six) and len(codes) == len(report.layers)
    assert all(int(np.abs(c).max()) <= 31 for c in narrow)
    assert max(int(np.abs(c).max()) for c in narrow) == 31  # the 6-bit range is used
    _, _, x_test, y_test = splits
    held_out = Evaluator(digits, Calibration({"input": x_test}, y_test))
    assert held_out.measure(after).drop <= 0.01


def test_emitted_graph_matches_onnxruntime(quantized: tuple, splits: tuple) -> None:
    after, _ = quantized
    optc.verify(after, types=True)
    _, _, x_test, _ = splits
    session = onnxruntime_runner(after)
    for x in x_test[:16]:
        want = session({"input": x[None]})["logits"]
        got = run_numpy(after, {"input": x[None]})["logits"]
        np.testing.assert_allclose(got, want, rtol=0, atol=0.01 * float(np.abs(want).max()))
        assert got.argmax() == want.argmax()


def test_report(digits: Graph, quantized: tuple) -> None:
    after, report = quantized
    assert report.param_bytes_after < report.param_bytes_before
    assert after.param_bytes() == report.param_bytes_after < digits.param_bytes()
    assert report.latency_s < report.latency_fp32_s
    assert report.latency_model == "ctx.analyses['latency']"
    assert report.metric == "accuracy" and not report.synthetic_calibration
    assert report.samples == 128
    assert 0.9 < report.fidelity["cosine"] <= 1.0 and report.fidelity["kl"] >= 0
    assert 0.95 <= report.fidelity["agreement"] <= 1.0
    stored = json.loads(after.metadata[REPORT_KEY])
    assert stored == json.loads(report.to_json())
    assert [row["precision"] for row in stored["layers"]] == list(report.bits().values())
    assert stored["trials"][0]["lowered"] == {} and stored["trials"][0]["drop"] == 0.0
    # the metadata survives an ONNX round trip
    assert optc.from_onnx(optc.to_onnx(after)).metadata[REPORT_KEY] == after.metadata[REPORT_KEY]


def test_without_calibration_data_uses_synthetic_inputs(digits: Graph,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    # priced by weight bytes, where fp16 halves them (on a CPU without float16
    # arithmetic the proxy finds fp16 no faster and keeps fp32)
    ctx = PassContext(analyses={"latency": packed_weight_seconds})
    after, report = quantize_mixed(digits, ctx, Options(bits=(16,), half_dtype="float16",
                                                        **QUICK))
    assert "synthetic" in caplog.text
    assert report is not None and report.synthetic_calibration
    assert report.metric == "agreement"
    assert set(report.bits().values()) == {"fp16"} and report.half_dtype == "float16"
    assert after is not digits


def test_latency_from_the_target_roofline(digits: Graph, context: PassContext) -> None:
    pytest.importorskip("optc.cost.roofline")
    from optc.target import get_target

    ctx = context.replace(target=get_target("orin", calibrate=False))
    _, report = quantize_mixed(digits, ctx, Options(**QUICK))
    assert report is not None and report.latency_model == "roofline(orin)"
    assert report.latency_s <= report.latency_fp32_s
    chosen = [t for t in report.trials if t["latency_s"] == report.latency_s and t["feasible"]]
    assert chosen  # the answer is a measured, feasible trial


def test_candidates_are_distinct_configurations(digits: Graph, context: PassContext) -> None:
    base = MixedPrecision(**QUICK)
    found = list(base.candidates(digits, context))
    assert len(found) == len({str(c) for c in found}) == 8
    assert {c.bits for c in found} == {(16,), (8, 16), (4, 8, 16)}
    assert {c.act_bits for c in found if c.bits != (16,)} == {8, 16}
    smaller = sorted(c.max_drop for c in found if c.max_drop != base.max_drop)
    assert smaller == [base.max_drop / 8, base.max_drop / 4, base.max_drop / 2]
