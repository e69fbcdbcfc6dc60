"""The built-in exact pipeline end to end on real models, verified after every pass."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pass_support import (
    assert_outputs_close,
    light_model,
    onnxruntime_runner,
    op_count,
    ramp_inputs,
    run_onnxruntime,
    run_reference,
)

import optc
from optc.pipeline import PassContext, TimingInstrument, VerifyInstrument, parse_pipeline

EXACT = "fold-constants,fold-batchnorm,eliminate-dead-code"
MODELS = Path(__file__).resolve().parents[1] / "examples" / "models"


def test_trained_digits_cnn_keeps_its_predictions() -> None:
    """A CNN trained on real handwritten digits: BatchNormalization folds away and every
    held-out image gets the same logits (so the same accuracy)."""
    graph = optc.load_onnx(MODELS / "digits_cnn.onnx")
    timing = TimingInstrument()
    result = parse_pipeline(EXACT).run(graph, PassContext(),
                                       instruments=[VerifyInstrument(types=True), timing])
    after = result.graph
    assert op_count(graph, "BatchNormalization") == 3
    assert op_count(after, "BatchNormalization") == 0
    assert [r.name for r in timing.records] == EXACT.split(",")
    data = np.load(MODELS / "digits_test.npz")
    images, labels = data["input"], data["labels"]
    name = graph.input_names[0]
    run_before, run_after = onnxruntime_runner(graph), onnxruntime_runner(after)
    before_logits = np.concatenate([run_before({name: x[None]})["logits"] for x in images])
    after_logits = np.concatenate([run_after({name: x[None]})["logits"] for x in images])
    assert_outputs_close({"logits": before_logits}, {"logits": after_logits})
    assert np.array_equal(before_logits.argmax(1), after_logits.argmax(1))
    assert (after_logits.argmax(1) == labels).mean() > 0.9  # the model is really trained
    for x in images[:20]:
        assert_outputs_close(run_before({name: x[None]}), run_reference(after, {name: x[None]}))


def test_inception_v2_end_to_end() -> None:
    graph = light_model("inception_v2")
    result = parse_pipeline(EXACT).run(graph, instruments=[VerifyInstrument()])
    assert [r.modified for r in result.records] == [True, True, True]
    after = result.graph
    assert op_count(after, "BatchNormalization") == 0
    assert op_count(after, "ConstantOfShape") == 0
    assert not any(name.endswith("__SHAPE") for name in after.params)  # dead after folding
    feeds = ramp_inputs(graph)
    assert_outputs_close(run_onnxruntime(graph, feeds), run_onnxruntime(after, feeds))
