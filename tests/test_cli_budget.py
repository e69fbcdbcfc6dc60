"""``optc compile --budget``: an impossible budget exits 3 and still writes OUT with a report
that says by how much the budget was missed and what dominated the time; a missing or
invalid calibration file and an unreadable budget exit 2 and write nothing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result
from test_compile_support import (
    DIGITS,
    DIGITS_TEST,
    cache_dir,  # noqa: F401 (a fixture)
    folder_state,
)

from optc.cli.main import cli


def invoke(*args: str, cache: Path) -> Result:
    return CliRunner().invoke(cli, list(args), env={"XDG_CACHE_HOME": str(cache)})


def test_impossible_budget_exits_3_with_a_report(tmp_path: Path,
                                                 cache_dir: Path) -> None:  # noqa: F811
    out = tmp_path / "digits"
    result = invoke("compile", str(DIGITS), "-t", "host", "--budget", "1us", "--calib",
                    str(DIGITS_TEST), "--repeat", "3", "-o", str(out), cache=cache_dir)
    assert result.exit_code == 3, result.output
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("optc: error: no candidate meets the latency budget of 1 us")
    assert "x the budget; most time goes to" in result.stderr
    report = json.loads((out / "report.json").read_text())
    budget = report["budget"]
    assert budget["met"] is False and budget["budget_s"] == 1e-6
    assert budget["latency_source"] == "measured"
    assert budget["latency_s"] == report["measured"]["median_s"] > 1e-6
    assert budget["miss_s"] == pytest.approx(budget["latency_s"] - 1e-6)
    assert budget["miss_ratio"] == pytest.approx(budget["latency_s"] / 1e-6)
    top = budget["dominated_by"]["top_ops"]
    assert top and top[0]["share"] >= top[-1]["share"] and top[0]["op"] in result.stderr
    search = report["search"]
    assert search["chosen"] is None
    written = search["candidates"][search["written"]]
    assert written["pareto"] and written["drop"] <= search["max_drop"]
    measured = [c["measured_s"] for c in search["candidates"] if c["drop"] <= search["max_drop"]
                and c["measured_s"] is not None]
    assert written["measured_s"] == min(measured)  # the fastest point within the drop
    assert {"model.so", "model.onnx", "manifest.json", "report.json"} == \
        {p.name for p in out.iterdir()}
    # the summary was printed before the error line
    assert "budget" in result.stdout and "candidates (* written, P Pareto front)" in \
        result.stdout


def no_write(tmp_path: Path, args: list[str], message: str, cache: Path) -> None:
    """``optc compile`` with ``args`` exits 2 naming ``message`` and writes nothing."""
    before = folder_state(tmp_path)
    result = invoke("compile", str(DIGITS), "-t", "host", "-o", str(tmp_path / "out"), *args,
                    cache=cache)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert folder_state(tmp_path) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_missing_calibration_file(tmp_path: Path, cache_dir: Path) -> None:  # noqa: F811
    no_write(tmp_path, ["--budget", "5ms", "--calib", str(tmp_path / "none.npz")],
             "does not exist", cache_dir)


def test_calibration_file_not_npz(tmp_path: Path, cache_dir: Path) -> None:  # noqa: F811
    bad = tmp_path / "calib.npz"
    bad.write_text("input,labels\n0,1\n")
    no_write(tmp_path, ["--budget", "5ms", "--calib", str(bad)], "is not an .npz archive",
             cache_dir)


def test_calibration_with_wrong_shape(tmp_path: Path, cache_dir: Path) -> None:  # noqa: F811
    bad = tmp_path / "calib.npz"
    np.savez(bad, input=np.zeros((4, 1, 28, 28), np.float32))
    no_write(tmp_path, ["--budget", "5ms", "--calib", str(bad)], "has shape (4, 1, 28, 28)",
             cache_dir)


def test_calibration_checked_without_budget_too(tmp_path: Path,
                                                cache_dir: Path) -> None:  # noqa: F811
    no_write(tmp_path, ["--calib", str(tmp_path / "none.npz")], "does not exist", cache_dir)


@pytest.mark.parametrize("budget", ["20", "fast", "-5ms", "0s", "5 minutes"])
def test_unreadable_budget(tmp_path: Path, budget: str, cache_dir: Path) -> None:  # noqa: F811
    no_write(tmp_path, ["--budget", budget], "Invalid value for '--budget'", cache_dir)


@pytest.mark.parametrize("option", [("--max-drop", "0.02"), ("--latency-model", "roofline")])
def test_search_options_need_a_budget(tmp_path: Path, option: tuple[str, str],
                                      cache_dir: Path) -> None:  # noqa: F811
    no_write(tmp_path, list(option), "give --budget too", cache_dir)


def test_unknown_latency_model(tmp_path: Path, cache_dir: Path) -> None:  # noqa: F811
    no_write(tmp_path, ["--budget", "5ms", "--latency-model", "oracle"],
             "unknown latency model 'oracle' (known: roofline", cache_dir)


def test_learned_latency_model_prices_the_search(tmp_path: Path,
                                                 cache_dir: Path) -> None:  # noqa: F811
    """``--latency-model learned``: the shipped meta-trained model prices every candidate
    with an uncertainty; the budget is still decided on measured latency."""
    out = tmp_path / "digits"
    result = invoke("compile", str(DIGITS), "-t", "host", "--budget", "50ms", "--calib",
                    str(DIGITS_TEST), "--latency-model", "learned", "--repeat", "3",
                    "--json", "-o", str(out), cache=cache_dir)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    search = report["search"]
    assert search["latency_model"]["name"] == "learned"
    priced = [c for c in search["candidates"] if c["predicted_s"] is not None]
    assert priced and all(c["predicted_s"] > 0 and c["predicted_ln_std"] > 0 for c in priced)
    assert report["budget"]["met"] is True
    assert report["budget"]["latency_source"] == "measured"
