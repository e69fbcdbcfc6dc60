"""What the search's ``max-drop`` bounds when there are no labels: top-1 agreement for
logits, cosine similarity for everything else (3-D sequence outputs included)."""

from __future__ import annotations

import numpy as np
import pytest

import optc
from optc.quant import Calibration
from optc.quant.evaluate import Evaluator

WEIGHT = ", ".join(str(v) for v in np.linspace(-1.0, 1.0, 16))


def matmul_graph(shape: str) -> optc.Graph:
    return optc.parse_graph(
        'graph g {\n  opset "" = 17\n'
        f"  input %x: float32[{shape}]\n"
        f"  param %w: float32[4,4] = [{WEIGHT}]\n"
        f"  %y: float32[{shape}] = MatMul(%x, %w)\n"
        "  output %y: float32[" + shape + "]\n}"
    )


@pytest.mark.parametrize(
    ("shape", "metric"),
    [
        ("8,4", "agreement"),  # [N, classes]: logits
        ("8,3,4", "cosine"),  # [N, tokens, features]: hidden states, not classes on axis 1
    ],
)
def test_auto_metric_by_output_rank(shape: str, metric: str) -> None:
    graph = matmul_graph(shape)
    x = np.random.default_rng(0).standard_normal([int(d) for d in shape.split(",")])
    evaluator = Evaluator(graph, Calibration({"x": x.astype(np.float32)}))
    assert evaluator.metric == metric
    assert evaluator.measure(graph).drop == pytest.approx(0.0, abs=1e-12)


@pytest.mark.heavy  # exports MiniLM-L6 and runs it in the interpreter: ~20-50 s
def test_cosine_ignores_padded_tokens_of_a_real_sentence(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """MiniLM-L6 on a padded sentence: with an ``attention_mask`` the cosine counts the
    real tokens only (padding's hidden states are no part of any result), so changing
    the output at padded tokens costs nothing and changing a real token does."""
    import model_zoo

    from optc.pipeline import parse_pipeline
    from optc.quant.evaluate import cosine

    graph = parse_pipeline("fold-constants,eliminate-dead-code").run(
        optc.load_onnx(model_zoo.minilm_onnx(tmp_path_factory, dynamo=False))).graph
    length = model_zoo.minilm_inputs()["input_ids"].shape[1]  # the export's static length
    short = model_zoo.minilm_inputs("A short one.")
    real = short["input_ids"].shape[1]
    assert real < length
    feeds = {k: np.pad(v, ((0, 0), (0, length - real))) for k, v in short.items()}
    evaluator = Evaluator(graph, Calibration(feeds))
    assert evaluator.metric == "cosine" and evaluator.mask is not None
    np.testing.assert_array_equal(evaluator.mask.numpy(), feeds["attention_mask"] != 0)
    padded = evaluator.reference.clone()
    padded[:, real:] += 5.0
    assert cosine(padded, evaluator.reference) < 0.99  # the raw output changed a lot
    assert evaluator.score(padded) == pytest.approx(evaluator.baseline, abs=1e-12)
    changed = evaluator.reference.clone()
    changed[:, 0] += 5.0
    assert evaluator.score(changed) < evaluator.baseline - 1e-3
