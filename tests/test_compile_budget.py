"""``compile_model(..., budget_s=...)`` on the bundled digits CNN, calibrated and scored on its
held-out digits: the written artifact meets the budget in measured latency, its own
accuracy (run here on every held-out digit, not taken from the report) is within
max-drop, and the report documents the whole search."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_compile_support import (
    DIGITS,
    DIGITS_TEST,
    cache_dir,  # noqa: F401 (a fixture)
)

from optc.compiler import CompileResult, compile_model
from optc.errors import UserInputError

BUDGET_S = 5e-3
MAX_DROP = 0.01


@pytest.fixture(scope="module")
def budgeted(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path,  # noqa: F811
             ) -> CompileResult:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(cache_dir))
        return compile_model(DIGITS, "host", tmp_path_factory.mktemp("budget") / "digits",
                             budget_s=BUDGET_S, max_drop=MAX_DROP, calibration=DIGITS_TEST,
                             repeat=5)


def test_meets_the_budget_in_measured_latency(budgeted: CompileResult) -> None:
    report = budgeted.report
    assert report["measured"]["repeat"] == 5
    assert report["measured"]["median_s"] <= BUDGET_S
    assert report["budget"] == {**report["budget"], "met": True, "latency_source": "measured",
                                "latency_s": report["measured"]["median_s"], "miss_s": None}
    assert report["check"]["status"] in ("passed", "approximate")


def test_compiled_accuracy_within_max_drop(budgeted: CompileResult) -> None:
    from optc.codegen import load_artifact, run

    data = np.load(DIGITS_TEST)
    loaded = load_artifact(budgeted.artifact)
    predicted = [int(run(loaded, {"input": x[None]})["logits"].argmax())
                 for x in data["input"]]
    accuracy = float(np.mean(np.array(predicted) == data["labels"]))
    accuracy_report = budgeted.report["accuracy"]
    assert accuracy_report["metric"] == "accuracy" and accuracy_report["baseline"] > 0.97
    assert accuracy >= accuracy_report["baseline"] - MAX_DROP
    assert accuracy == pytest.approx(accuracy_report["score"], abs=1 / len(predicted) + 1e-9)


def test_report_documents_the_search(budgeted: CompileResult) -> None:
    report = budgeted.report
    assert json.loads((budgeted.artifact / "report.json").read_text()) == report
    search = report["search"]
    rows = search["candidates"]
    # Each row is a distinct graph; pipelines that gave a graph already listed (e.g. a
    # mixed-precision proposal that lowered nothing: the roofline prices the launch-bound
    # digits CNN's quantized layers no faster) are named in its "same_graph".
    assert rows and [r["index"] for r in rows] == list(range(len(rows)))
    chosen = rows[search["chosen"]]
    assert search["written"] == search["chosen"]
    assert report["pipeline"]["text"] == chosen["pipeline"] and report["pipeline"]["source"] \
        == "search"
    assert chosen["stage"] == "measured" and chosen["measured_s"] <= BUDGET_S
    assert chosen["drop"] <= MAX_DROP and chosen["pareto"] in (True, False)
    # nothing measured within budget and drop was more accurate than the choice
    fitting = [r for r in rows if r["measured_s"] is not None and r["measured_s"] <= BUDGET_S
               and r["drop"] <= MAX_DROP]
    assert chosen["score"] == max(r["score"] for r in fitting)
    assert search["pareto"] == sorted(r["index"] for r in rows if r["pareto"])
    assert all(r["predicted_s"] > 0 for r in rows)
    assert any("mixed-precision" in text for r in rows
               for text in (r["pipeline"], *r["same_graph"]))  # the lossy pass was tried
    assert any("mixed-precision" not in r["pipeline"] for r in rows)  # the float model
    assert search["pipeline"]["source"] == "target host default"
    assert search["pipeline"]["text"].endswith(",mixed-precision")  # added: none was lossy
    assert search["accuracy"]["calibration"] == str(DIGITS_TEST)
    assert search["accuracy"]["samples"] == 450
    assert report["predicted"]["cost_model"].startswith("roofline")
    stages = report["stages_s"]
    assert {"search.passes", "search.predict", "search.accuracy", "search.measure", "build",
            "run", "total"} <= stages.keys()
    for row in report["precision"]:
        assert row["bits"] in (4, 6, 8, 16) and row["op"] in ("Conv", "Gemm", "MatMul")
    if "mixed-precision" in chosen["pipeline"]:
        assert report["precision"]
    assert isinstance(report["fusion_groups"], dict)


def test_bad_calibration_is_a_user_error(tmp_path: Path, cache_dir: Path,  # noqa: F811
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache_dir))
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, image=np.zeros((4, 1, 8, 8), np.float32))
    with pytest.raises(UserInputError, match="no array for model input"):
        compile_model(DIGITS, "host", tmp_path / "out", budget_s=BUDGET_S, calibration=wrong)
    with pytest.raises(UserInputError, match="--tune cannot be combined"):
        compile_model(DIGITS, "host", tmp_path / "out", budget_s=BUDGET_S, tune=2)
    with pytest.raises(UserInputError, match="unknown latency model 'learnt'"):
        compile_model(DIGITS, "host", tmp_path / "out", budget_s=BUDGET_S,
                      latency_model="learnt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wrong.npz"]


@pytest.mark.heavy  # ~35 s on two cores: the loopback tracker and server start
def test_candidates_are_timed_on_the_rpc_device(tmp_path: Path, cache_dir: Path,  # noqa: F811
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Through a loopback TVM RPC tracker: the timings come from the device."""
    from rpc_loopback import HOST, loopback_tracker

    from optc.compiler import RpcTracker

    monkeypatch.setenv("XDG_CACHE_HOME", str(cache_dir))
    key = "optc-test-budget"
    with loopback_tracker(key) as port:
        result = compile_model(DIGITS, "host", tmp_path / "digits", budget_s=BUDGET_S,
                               calibration=DIGITS_TEST, repeat=3,
                               rpc=RpcTracker(HOST, port, key))
    report = result.report
    assert report["measured"]["where"].startswith(f"rpc {key}@{HOST}:{port}")
    assert report["budget"]["met"] and report["measured"]["median_s"] <= BUDGET_S
    chosen = report["search"]["candidates"][report["search"]["chosen"]]
    # accuracy of a remote run is the interpreter's: outputs are fetched for timing only
    assert chosen["stage"] == "measured" and chosen["score_source"] == "interpreter"
    assert report["search"]["measured_where"] == "measured"
