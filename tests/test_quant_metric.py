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
