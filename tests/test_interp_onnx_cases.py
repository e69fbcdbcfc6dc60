"""The reference interpreter against ONNX's own operator test cases.

Two sources, both shipped with the onnx wheel:
- the ~1900 in-memory node cases of ``onnx.backend.test.case.node`` (one op, expected
  outputs from ONNX's reference implementation), at each op's latest opsets;
- the model cases of ``backend/test/data/{simple,pytorch-converted,pytorch-operator}``
  (opsets 6-12) with their stored inputs and outputs.

A case whose ops or types the interpreter does not support (sequences, strings, 4-bit
types, ops without a rule) is counted, not failed. ``KNOWN_DIVERGENCES`` lists the
cases where optc deliberately follows onnxruntime instead of ONNX's reference; each
must keep diverging, so the list stays true.
"""

from __future__ import annotations

import glob
import warnings
from pathlib import Path
from typing import Any

import model_zoo
import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import optc
from optc.errors import InvalidModelError, UnsupportedOpError, UserInputError
from optc.interp import has_rule, run_numpy
from optc.ir import Graph

GROUP = ("interp: onnx node cases", ("passed", "known divergence", "unsupported"))
MODEL_KINDS = ("simple", "pytorch-converted", "pytorch-operator")

KNOWN_DIVERGENCES = {
    **{name: "Dropout is the identity even with training_mode=1, as in onnxruntime"
       for name in ("test_training_dropout", "test_training_dropout_default",
                    "test_training_dropout_default_mask", "test_training_dropout_mask")},
    **{name: "align_corners uses the integer output length, as onnxruntime does"
       for name in ("test_resize_downsample_scales_linear_align_corners",
                    "test_resize_downsample_scales_cubic_align_corners")},
    **{f"test_{kind}_no_saturate_{src}_to_FLOAT8E4M3FN{suffix}":
       "float8 casts with saturate=0: torch saturates e4m3fn instead of giving NaN"
       for kind in ("cast", "castlike") for src in ("FLOAT", "FLOAT16")
       for suffix in (("",) if kind == "cast" else ("", "_expanded"))},
}
RANDOM_OPS = frozenset({"Bernoulli", "RandomNormal", "RandomNormalLike", "RandomUniform",
                        "RandomUniformLike"})
"""Their values depend on the generator: only output shapes and dtypes are compared."""
HALF_TOLERANCE = {"float16": 2e-3, "bfloat16": 1.6e-2}  # about two units in the last place


def _array(value: Any) -> Any:
    return numpy_helper.to_array(value) if isinstance(value, onnx.TensorProto) else value


def _unsupported_reason(graph: Graph, inputs: list[Any]) -> str | None:
    ops = [(n.op, n.domain) for n in _all_nodes(graph)]
    missing = sorted({f"{d}::{o}" if d else o for o, d in ops if not has_rule(o, d)})
    if missing:
        return f"ops without a rule: {missing}"
    values = list(graph.inputs) + list(graph.outputs)
    if any(v.dtype and ("(" in v.dtype or v.dtype == "string") for v in values):
        return "sequence, optional or string values"
    if any(not isinstance(x, np.ndarray) for x in inputs):
        return "a non-tensor input"
    return None


def _all_nodes(graph: Graph) -> list[Any]:
    nodes = []
    for node in graph.nodes:
        nodes.append(node)
        for sub in node.subgraphs():
            nodes.extend(_all_nodes(sub))
    return nodes


def _compare(got: np.ndarray, want: np.ndarray, rtol: float, atol: float,
             values: bool = True) -> str | None:
    want = np.asarray(want)
    if got.shape != want.shape or got.dtype != want.dtype:
        return f"got {got.dtype}{got.shape}, want {want.dtype}{want.shape}"
    if not values:
        return None
    if want.dtype.kind in "biu" or want.dtype == bool:
        return None if np.array_equal(got, want) else "values differ"
    tol = HALF_TOLERANCE.get(want.dtype.name)
    if tol is not None:
        rtol, atol = max(rtol, tol), max(atol, tol)
    with np.errstate(invalid="ignore"):  # float8 NaNs widen with a warning
        close = np.allclose(got.astype(np.float64), want.astype(np.float64),
                            rtol=max(rtol, 1e-4), atol=atol, equal_nan=True)
    return None if close else "values differ"


def run_case(model: onnx.ModelProto, inputs: list[Any], outputs: list[Any], rtol: float,
             atol: float) -> tuple[str, str]:
    """(outcome, detail): outcome is "passed", "failed" or "unsupported"."""
    try:
        graph = optc.from_onnx(model)
    except InvalidModelError as exc:  # non-tensor types, model-local functions
        return "unsupported", str(exc)
    inputs = [_array(x) for x in inputs]
    reason = _unsupported_reason(graph, inputs)
    if reason:
        return "unsupported", reason
    try:
        got = run_numpy(graph, dict(zip(graph.input_names, inputs, strict=True)))
    except (UnsupportedOpError, UserInputError) as exc:
        if "dtype" in str(exc) or "string" in str(exc):
            return "unsupported", str(exc)  # 2- and 4-bit types, float8 e8m0
        return "failed", f"{type(exc).__name__}: {exc}"
    except InvalidModelError as exc:
        return "failed", f"{type(exc).__name__}: {exc}"
    random = any(node.op in RANDOM_OPS for node in _all_nodes(graph))
    for value, want in zip(graph.outputs, outputs, strict=True):
        problem = _compare(got[value.name], _array(want), rtol, atol, values=not random)
        if problem:
            return "failed", f"output {value.name!r}: {problem}"
    return "passed", ""


@pytest.fixture(scope="module")
def node_cases() -> list[Any]:
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():  # the case generators overflow casts on purpose
        warnings.simplefilter("ignore")
        return [case for case in collect_testcases() if case.kind == "node"]


def test_onnx_node_cases(node_cases: list[Any], record_property: Any) -> None:
    outcomes: dict[str, int] = {"passed": 0, "known divergence": 0, "unsupported": 0}
    failures, stale = [], []
    for case in node_cases:
        inputs, outputs = case.data_sets[0]
        outcome, detail = run_case(case.model, list(inputs), list(outputs), case.rtol,
                                   case.atol)
        if case.name in KNOWN_DIVERGENCES:
            if outcome == "passed":
                stale.append(case.name)
            outcome = "known divergence"
        elif outcome == "failed":
            failures.append(f"{case.name}: {detail}")
            continue
        outcomes[outcome] += 1
    for category, count in outcomes.items():
        record_property("summary", (*GROUP, category, count))
    assert not failures, f"{len(failures)} node cases fail:\n" + "\n".join(failures)
    assert not stale, f"listed as known divergences but now pass: {stale}"
    assert outcomes["passed"] > 1200  # most of ONNX's operator tests run


def _model_case_dirs() -> list[Path]:
    return sorted(Path(d) for kind in MODEL_KINDS
                  for d in glob.glob(str(model_zoo.ONNX_DATA / kind / "*")))


@pytest.mark.parametrize("case_dir", _model_case_dirs(), ids=lambda d: f"{d.parent.name}/{d.name}")
def test_onnx_model_cases(case_dir: Path, record_property: Any) -> None:
    model = onnx.load(str(case_dir / "model.onnx"))
    data_set = sorted(case_dir.glob("test_data_set_*"))[0]
    inputs = [onnx.load_tensor(str(p)) for p in sorted(data_set.glob("input_*.pb"))]
    outputs = [onnx.load_tensor(str(p)) for p in sorted(data_set.glob("output_*.pb"))]
    outcome, detail = run_case(model, inputs, outputs, rtol=1e-3, atol=1e-7)
    assert outcome != "failed", detail
    record_property("summary", (*GROUP, outcome))
