"""The reference interpreter on real models, against onnxruntime and shipped outputs.

Tolerance: rtol 1e-4 (the project's bar for float32 reassociation) and an absolute
floor of 1e-6 x the largest reference magnitude, because summation order differs
between torch and onnxruntime kernels: an element near zero inherits rounding error
from the large terms it was summed from, so its *relative* error is meaningless.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path

import model_zoo
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import optc
from optc.interp import run, run_numpy

RTOL = 1e-4
ATOL_SCALE = 1e-6
LIGHT_GROUP = ("interp: light models vs onnxruntime", ("match", "mismatch"))


def ort_outputs(model: onnx.ModelProto | Path, feeds: Mapping[str, np.ndarray],
                extra_outputs: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """onnxruntime's outputs, plus any intermediate values named in ``extra_outputs``."""
    if isinstance(model, Path) and not extra_outputs:
        source: str | bytes = str(model)
    else:
        proto = model if isinstance(model, onnx.ModelProto) else onnx.load(str(model))
        for name in extra_outputs:
            proto.graph.output.append(onnx.ValueInfoProto(name=name))
        source = proto.SerializeToString()
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, dict(feeds)), strict=True))


def assert_close(got: np.ndarray, want: np.ndarray, what: str) -> None:
    assert got.shape == want.shape, what
    atol = ATOL_SCALE * float(np.max(np.abs(want))) if want.size else 0.0
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=atol, err_msg=what)


@pytest.mark.parametrize("name", model_zoo.LIGHT_MODELS)
def test_light_model_matches_ort_and_shipped_output(name: str, record_property) -> None:
    path = model_zoo.light_model_path(name)
    feeds = model_zoo.backend_runner_inputs(path)
    graph = optc.load_onnx(path)
    output = graph.output_names[0]
    # The fake weights make the softmax output nearly uniform, so the logits feeding
    # the last node are compared too: they carry the whole network's arithmetic.
    logits = graph.nodes[-1].inputs[0]
    start = time.perf_counter()
    with torch.no_grad():
        got = {k: v.numpy() for k, v in run(graph, feeds, outputs=[output, logits]).items()}
    seconds = time.perf_counter() - start
    want = ort_outputs(path, feeds, extra_outputs=(logits,))
    try:
        assert_close(got[output], want[output], f"{name}: {output}")
        assert_close(got[logits], want[logits], f"{name}: {logits}")
        assert_close(got[output], model_zoo.light_reference_output(name), f"{name}: shipped")
    except AssertionError:
        record_property("summary", (*LIGHT_GROUP, "mismatch"))
        raise
    record_property("summary", (*LIGHT_GROUP, "match"))
    print(f"interp {name}: {len(graph.nodes)} nodes in {seconds:.2f} s")


@pytest.fixture(scope="module")
def minilm_feeds() -> dict[str, np.ndarray]:
    return model_zoo.minilm_inputs()


@pytest.mark.parametrize("dynamo", [False, True], ids=["legacy", "dynamo"])
def test_minilm_matches_ort(dynamo: bool, minilm_feeds: dict[str, np.ndarray],
                            tmp_path_factory: pytest.TempPathFactory) -> None:
    path = model_zoo.minilm_onnx(tmp_path_factory, dynamo=dynamo)
    graph = optc.load_onnx(path)
    got = run_numpy(graph, minilm_feeds)
    want = ort_outputs(path, minilm_feeds)
    assert got.keys() == want.keys()
    for name, array in want.items():
        assert array.shape[:2] == minilm_feeds["input_ids"].shape  # (batch, tokens, 384)
        assert_close(got[name], array, f"MiniLM ({'dynamo' if dynamo else 'legacy'}) {name}")


@pytest.mark.parametrize("dynamo", [False, True], ids=["legacy", "dynamo"])
def test_efficientnet_lite0_matches_ort_on_a_photo(
        dynamo: bool, tmp_path_factory: pytest.TempPathFactory) -> None:
    path = model_zoo.efficientnet_onnx(tmp_path_factory, dynamo=dynamo)
    graph = optc.load_onnx(path)
    feeds = {graph.input_names[0]: model_zoo.sample_photo(1)}  # not the export's photo
    got = run_numpy(graph, feeds)
    want = ort_outputs(path, feeds)
    for name, array in want.items():
        assert array.shape == (1, 1000)
        assert_close(got[name], array, f"EfficientNet-Lite0 {name}")
        assert int(np.argmax(got[name])) == int(np.argmax(array))


def test_gradient_through_minilm_matches_finite_difference(
        minilm_feeds: dict[str, np.ndarray], tmp_path_factory: pytest.TempPathFactory) -> None:
    graph = optc.load_onnx(model_zoo.minilm_onnx(tmp_path_factory, dynamo=False))
    # The first FFN weight of the last layer: a real MatMul weight deep in the graph.
    name = max((n for n, a in graph.params.items() if a.ndim == 2 and a.shape == (384, 1536)),
               key=lambda n: list(graph.params).index(n))
    weight = torch.tensor(graph.params[name], requires_grad=True)
    projection = torch.from_numpy(np.random.default_rng(0).standard_normal(
        (1, minilm_feeds["input_ids"].shape[1], 384)).astype(np.float32))

    def loss(w: torch.Tensor) -> torch.Tensor:
        out = run(graph, minilm_feeds, params={name: w})[graph.output_names[0]]
        return (out * projection).sum()

    (grad,) = torch.autograd.grad(loss(weight), weight)
    assert grad.shape == weight.shape and torch.isfinite(grad).all()
    index = np.unravel_index(int(torch.argmax(grad.abs())), grad.shape)
    eps = 1e-2
    with torch.no_grad():
        bumped = [weight.detach().clone() for _ in range(2)]
        bumped[0][index] += eps
        bumped[1][index] -= eps
        numeric = float(loss(bumped[0]) - loss(bumped[1])) / (2 * eps)
    # Central difference in float32: truncation is O(eps^2); round-off of the ~1e2-sized
    # loss is ~1e-5 / eps ~ 1e-3, hence the 2% tolerance on the largest gradient entry.
    assert numeric == pytest.approx(float(grad[index]), rel=2e-2)
