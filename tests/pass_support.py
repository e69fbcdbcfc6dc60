"""Shared helpers for the pass tests (golden IR files, real models, numeric checks).

Named ``test_*`` only so that it sits with the pass tests it serves; it holds no tests.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx

import optc
from optc.ir.graph import Graph, Value

GOLDEN = Path(__file__).parent / "golden"
LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"

RTOL = 1e-4
ATOL_SCALE = 1e-4
"""Absolute tolerance as a fraction of the reference output's largest magnitude.

Exact rewrites reassociate float32 arithmetic (``(W * s) @ x`` instead of
``s * (W @ x)``), so each element carries rounding of order 1e-7 times the magnitudes
that were summed into it, not times its own value: an element that is a near-zero
difference of large terms has no meaningful relative accuracy. Scaling atol with the
output's range makes the check independent of the model's units while staying
1e4 times tighter than any real change a wrong fold would cause.
"""


def golden(pass_dir: str, case: str) -> tuple[str, str]:
    """The (before, after) canonical texts of ``tests/golden/<pass_dir>/<case>``."""
    folder = GOLDEN / pass_dir
    return ((folder / f"{case}.before.ir").read_text(),
            (folder / f"{case}.after.ir").read_text())


def light_model(name: str) -> Graph:
    """One of the ONNX ``light`` models (real architectures, constant weights)."""
    return optc.load_onnx(LIGHT / f"light_{name}.onnx")


def ramp_inputs(graph: Graph) -> dict[str, np.ndarray]:
    """``arange(n).reshape(shape) / n`` in float32 for every graph input."""
    feeds = {}
    for value in graph.inputs:
        shape = tuple(int(d) for d in value.shape or ())
        n = int(np.prod(shape))
        feeds[value.name] = (np.arange(n).reshape(shape) / n).astype(np.float32)
    return feeds


def with_outputs(graph: Graph, names: Sequence[str]) -> Graph:
    """``graph`` with the values ``names`` appended to its outputs (to compare inside it)."""
    extra = tuple(Value(n, graph.value(n).dtype, graph.value(n).shape) for n in names
                  if n not in graph.output_names)
    return graph.replace(outputs=graph.outputs + extra)


def run_onnxruntime(graph: Graph, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    return onnxruntime_runner(graph)(feeds)


def onnxruntime_runner(graph: Graph) -> Callable[[Mapping[str, np.ndarray]],
                                                 dict[str, np.ndarray]]:
    """One onnxruntime session for ``graph``, called with feeds, returning outputs by name."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    # Optimizations off: onnxruntime must not fold BatchNormalization itself.
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(optc.to_onnx(graph).SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    names = list(graph.output_names)

    def run(feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(names, session.run(names, dict(feeds)), strict=True))

    return run


def run_reference(graph: Graph, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Outputs through optc's reference interpreter (``optc.interp``)."""
    from optc.interp import run_numpy

    return run_numpy(graph, feeds)


def assert_outputs_close(expected: Mapping[str, np.ndarray],
                         actual: Mapping[str, np.ndarray]) -> None:
    assert set(expected) == set(actual)
    for name, want in expected.items():
        got = actual[name]
        assert got.shape == want.shape, name
        assert np.all(np.isfinite(want)), f"{name}: the reference is not finite"
        atol = ATOL_SCALE * float(np.max(np.abs(want))) if want.size else 0.0
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=atol, err_msg=name)


def op_count(graph: Graph, op: str) -> int:
    return sum(1 for node in graph.nodes if node.op == op)
