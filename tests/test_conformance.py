"""ONNX backend-test models: ONNX -> optc IR -> text -> IR -> ONNX must still run right.

Every model case shipped in onnx's ``backend/test/data`` is loaded the way onnx's own
backend runner loads it (``onnx.backend.test.loader.load_model_tests``): per-case
tolerances from ``data.json``; ``real`` cases whose url names a model shipped in
``data/light`` run that model on the runner's generated input
``(arange(n).reshape(shape) / n).astype(float32)`` against ``light_*_output_0.pb``.

Outcomes, counted in the summary line at the end of the run (see ``conftest.py``):
- passed round-trip: the round-tripped model gives the reference outputs in onnxruntime;
- unsupported (listed): optc cannot support it; listed with the reason in
  ``conformance_unsupported.toml``, and the test fails as soon as a listed case passes;
- not runnable by onnxruntime: ORT rejects the *original* model (ORT's reason is shown);
  optc's IR round trip is still checked structurally;
- unavailable: a ``real`` case whose model is neither shipped nor downloadable offline.

A heavy test (``-m heavy``) runs onnx's ~1900 in-memory operator cases the same way.
"""

from __future__ import annotations

import glob
import os
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper
from onnx.backend.test.loader import load_model_tests
from onnx.backend.test.runner import Runner

import optc
from optc.ir import parse_graph, print_graph, structurally_equal, tensor_store

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ONNX_ROOT = Path(onnx.__file__).resolve().parent.parent
KINDS = ("real", "simple", "pytorch-converted", "pytorch-operator")
LIGHT_URL_PREFIX = "onnx/backend/test/data/light/"
UNSUPPORTED_FILE = Path(__file__).with_name("conformance_unsupported.toml")
CATEGORIES = ("passed round-trip", "unsupported (listed)", "not runnable by onnxruntime",
              "unavailable")


@dataclass(frozen=True)
class Case:
    """One backend-test model case; ``model_path`` is None when the model is not shipped."""

    name: str
    model_path: Path | None
    rtol: float
    atol: float
    light: bool = False
    url: str = ""


def discover_cases() -> list[Case]:
    cases = []
    for kind in KINDS:
        for test in sorted(load_model_tests(kind=kind), key=lambda t: t.name):
            name = f"{kind}/{test.name}"
            if test.model_dir is not None:
                path = Path(test.model_dir) / "model.onnx"
                cases.append(Case(name, path, test.rtol, test.atol))
            elif test.url and test.url.startswith(LIGHT_URL_PREFIX):
                # onnx's runner resolves these urls to the models shipped in data/light.
                path = ONNX_ROOT / test.url
                cases.append(Case(name, path if path.is_file() else None, test.rtol, test.atol,
                                  light=True, url=test.url))
            else:
                cases.append(Case(name, None, test.rtol, test.atol, url=test.url or ""))
    # A light model no `real` case points at still gets a case, with default tolerances.
    covered = {case.url for case in cases if case.light}
    for path in sorted((ONNX_ROOT / LIGHT_URL_PREFIX).glob("*.onnx")):
        url = LIGHT_URL_PREFIX + path.name
        if url not in covered:
            cases.append(Case(f"light/{path.stem}", path, 1e-3, 1e-7, light=True, url=url))
    return cases


def load_unsupported() -> dict[str, str]:
    with UNSUPPORTED_FILE.open("rb") as f:
        return {str(k): str(v) for k, v in tomllib.load(f).items()}


CASES = discover_cases()
UNSUPPORTED = load_unsupported()


def _load_proto(path: str, type_proto: onnx.TypeProto) -> Any:
    """A reference tensor, sequence or optional from a ``.pb`` file (as onnx's runner)."""
    raw = Path(path).read_bytes()
    if type_proto.HasField("sequence_type"):
        seq = onnx.SequenceProto()
        seq.ParseFromString(raw)
        return numpy_helper.to_list(seq)
    if type_proto.HasField("optional_type"):
        opt = onnx.OptionalProto()
        opt.ParseFromString(raw)
        return numpy_helper.to_optional(opt)
    tensor = onnx.TensorProto()
    tensor.ParseFromString(raw)
    return numpy_helper.to_array(tensor)


def data_sets(case: Case, model: onnx.ModelProto) -> list[tuple[dict[str, Any], list[Any]]]:
    graph = model.graph
    if case.light:
        inits = {init.name for init in graph.initializer}
        feeds = {x.name: Runner.generate_dummy_data(x, name=case.name) for x in graph.input
                 if x.name not in inits}
        prefix = str(case.model_path)[: -len(".onnx")]
        refs = [_load_proto(f"{prefix}_output_{i}.pb", out.type)
                for i, out in enumerate(graph.output)]
        return [(feeds, refs)]
    found = []
    for folder in sorted(glob.glob(str(case.model_path.parent / "test_data_set*"))):
        n_in = len(glob.glob(os.path.join(folder, "input_*.pb")))
        n_out = len(glob.glob(os.path.join(folder, "output_*.pb")))
        feeds = {graph.input[i].name: _load_proto(os.path.join(folder, f"input_{i}.pb"),
                                                  graph.input[i].type) for i in range(n_in)}
        refs = [_load_proto(os.path.join(folder, f"output_{i}.pb"), graph.output[i].type)
                for i in range(n_out)]
        found.append((feeds, refs))
    return found


def run_and_compare(model: onnx.ModelProto, rtol: float, atol: float, sets: list) -> None:
    options = ort.SessionOptions()
    options.log_severity_level = 4  # ORT logs each model it rejects; the skip reason says it
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    for feeds, refs in sets:
        Runner.assert_similar_outputs(refs, session.run(None, feeds), rtol=rtol, atol=atol)


def ir_round_trip(graph: optc.Graph) -> onnx.ModelProto:
    """Print and re-parse the IR's text form, then export back to ONNX."""
    reparsed = parse_graph(print_graph(graph), tensors=tensor_store(graph))
    assert structurally_equal(reparsed, graph), "IR text form did not round-trip"
    return optc.to_onnx(reparsed)


def first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines() or [type(exc).__name__]
    return f"{type(exc).__name__}: {lines[0][:300]}"


def judge(load: Callable[[], optc.Graph], original: onnx.ModelProto, rtol: float, atol: float,
          sets: list, listed: str | None) -> tuple[str, str]:
    """The case's category and a detail: ``CATEGORIES[0..2]``, ``"failed"`` or ``"stale"``."""
    try:
        run_and_compare(ir_round_trip(load()), rtol, atol, sets)
    except Exception as exc:  # any failure: judged against ORT below
        failure = first_line(exc)
    else:
        return ("stale", listed) if listed else (CATEGORIES[0], "")
    try:
        run_and_compare(original, rtol, atol, sets)
    except Exception as exc:  # ORT raises its own pybind types
        if listed is None:  # optc must still carry the model through unchanged
            graph = load()
            if not structurally_equal(optc.from_onnx(optc.to_onnx(graph)), graph):
                return "failed", "ONNX -> IR -> ONNX -> IR is not structurally equal"
        return CATEGORIES[2], first_line(exc)
    return (CATEGORIES[1], listed) if listed else ("failed", failure)


@pytest.fixture
def outcome(record_property: Any) -> Callable[..., None]:
    """Record a category for the summary line printed by ``conftest.py``."""
    def record(category: str, count: int = 1, group: str = "conformance") -> None:
        record_property("summary", (group, CATEGORIES, category, count))
    return record


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_round_trip_matches_reference(case: Case, outcome: Any) -> None:
    if case.model_path is None:
        outcome(CATEGORIES[3])
        pytest.skip(f"unavailable: the model ({case.url}) is not shipped with onnx and "
                    "cannot be downloaded here")
    path = case.model_path
    original = onnx.load(str(path))
    category, detail = judge(lambda: optc.load_onnx(path), original, case.rtol, case.atol,
                             data_sets(case, original), UNSUPPORTED.get(case.name))
    if category == "stale":
        pytest.fail(f"{case.name} passes but is listed in {UNSUPPORTED_FILE.name} "
                    f"({detail!r}); remove it from the list")
    if category == "failed":
        pytest.fail(f"{case.name}: {detail}")
    outcome(category)
    if category == CATEGORIES[1]:
        pytest.xfail(f"listed unsupported: {detail}")
    if category == CATEGORIES[2]:
        pytest.skip(f"onnxruntime cannot run the original model: {detail}")


@pytest.mark.heavy
def test_onnx_node_cases_round_trip(outcome: Any) -> None:
    """onnx's ~1900 operator test cases (built in memory by onnx) through the same round trip.

    Heavy only because onnx computes every case's reference data when they are loaded.
    """
    counts: Counter[str] = Counter()
    problems = []
    for test in load_model_tests(kind="node"):
        model = test.model
        sets = [({model.graph.input[i].name: _as_array(v) for i, v in enumerate(inputs)},
                 [_as_array(v) for v in outputs]) for inputs, outputs in test.data_sets]
        name = f"node/{test.name}"
        category, detail = judge(lambda m=model: optc.from_onnx(m), model, test.rtol,
                                 test.atol, sets, UNSUPPORTED.get(name))
        counts[category] += 1
        if category in ("failed", "stale"):
            problems.append(f"{name} {category}: {detail}")
    for category in CATEGORIES[:3]:
        outcome(category, counts[category], group="conformance (onnx node cases)")
    assert counts[CATEGORIES[0]] > 1000
    assert not problems, "\n".join(problems)


def _as_array(value: Any) -> Any:
    return numpy_helper.to_array(value) if isinstance(value, onnx.TensorProto) else value


def test_unsupported_list_names_real_cases() -> None:
    names = {case.name for case in CASES}
    stale = sorted(n for n in set(UNSUPPORTED) - names if not n.startswith("node/"))
    assert not stale, f"{UNSUPPORTED_FILE.name} lists cases that do not exist: {stale}"
    assert all(reason.strip() for reason in UNSUPPORTED.values()), "every entry needs a reason"


def test_every_light_model_is_covered() -> None:
    shipped = {p.name for p in (ONNX_ROOT / LIGHT_URL_PREFIX).glob("*.onnx")}
    light_cases = [c for c in CASES if c.light and c.model_path is not None]
    assert shipped == {c.model_path.name for c in light_cases}
    for case in light_cases:  # each needs the runner's reference output beside it
        assert case.model_path.with_name(case.model_path.stem + "_output_0.pb").is_file()
