"""``optc compile``: the summary, ``--json``, and bad input (one line, exit 2, OUT intact),
in-process (CliRunner) and through the installed ``optc`` script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from test_compile_support import (
    DIGITS,
    cache_dir,  # noqa: F401 (a fixture)
    celu_model,
    folder_state,
)

from optc.cli.main import cli

OPTC = Path(sys.executable).parent / "optc"  # the console script of this environment


def invoke(*args: str, cache: Path) -> Result:
    return CliRunner().invoke(cli, list(args), env={"XDG_CACHE_HOME": str(cache)})


def test_compile_summary(tmp_path: Path, cache_dir: Path) -> None:  # noqa: F811
    out = tmp_path / "digits"
    result = invoke("compile", str(DIGITS), "--target", "host", "-o", str(out), "--repeat", "2",
                    cache=cache_dir)
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    fields = {line.split("  ")[1].strip(): line for line in lines
              if line.startswith("  ") and len(line.split("  ")) > 2}
    assert fields.keys() >= {"pipeline", "predicted", "measured", "measured/predicted",
                             "output check", "artifact"}
    assert "fold-constants,fold-batchnorm,eliminate-dead-code" in fields["pipeline"]
    assert "(roofline)" in fields["predicted"]
    assert "median" in fields["measured"] and "(2 runs, local cpu)" in fields["measured"]
    assert "passed (1 output vs the reference interpreter" in fields["output check"]
    assert str(out) in fields["artifact"]
    assert "where the time goes (predicted): top nodes" in lines
    assert "by op (predicted)" in lines and "stages" in lines
    report = json.loads((out / "report.json").read_text())
    top = report["predicted"]["top_nodes"][0]
    assert any(line.split()[:2] == [top["op"], top["name"]] for line in lines)


def test_compile_json_is_the_report(tmp_path: Path, cache_dir: Path) -> None:  # noqa: F811
    out = tmp_path / "pi"
    result = invoke("compile", str(DIGITS), "-t", "rasp4b", "-o", str(out), "--json",
                    cache=cache_dir)
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert document.pop("artifact") == str(out)
    assert document == json.loads((out / "report.json").read_text())
    assert document["measured"] is None and "aarch64" in document["measured_reason"]


def bad_input(tmp_path: Path, args: list[str], message: str, cache: Path) -> None:
    """Run ``optc compile`` with ``args``; exit 2, ``message`` on one stderr line, and
    ``tmp_path`` exactly as before."""
    before = folder_state(tmp_path)
    result = invoke("compile", *args, cache=cache)
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and message in result.stderr
    assert result.stderr.startswith("optc: error: ")
    assert folder_state(tmp_path) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left


def test_unknown_target(tmp_path: Path, cache_dir: Path) -> None:  # noqa: F811
    bad_input(tmp_path, [str(DIGITS), "-t", "rasp5", "-o", str(tmp_path / "out")],
              "unknown target 'rasp5'; did you mean 'rasp4b'", cache_dir)


def test_op_tvm_cannot_compile_leaves_artifact(tmp_path: Path, cache_dir: Path,  # noqa: F811
                                               ) -> None:
    out = tmp_path / "out"
    first = invoke("compile", str(DIGITS), "-t", "rasp4b", "-o", str(out), cache=cache_dir)
    assert first.exit_code == 0, first.stderr
    model = celu_model(tmp_path / "celu.onnx")
    bad_input(tmp_path, [str(model), "-t", "rasp4b", "-o", str(out)],
              "operator 'Celu' is not supported by TVM", cache_dir)


def test_unwritable_output(tmp_path: Path, cache_dir: Path) -> None:  # noqa: F811
    bad_input(tmp_path, [str(DIGITS), "-t", "rasp4b", "-o", "/proc/optc-out"],
              "cannot write artifact /proc/optc-out: /proc is not writable", cache_dir)
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "data.csv").write_text("1,2\n")
    bad_input(tmp_path, [str(DIGITS), "-t", "rasp4b", "-o", str(tmp_path / "taken")],
              "is a non-empty folder that is not an optc artifact", cache_dir)


@pytest.mark.parametrize(("args", "message"), [
    (["--rpc-tracker", "127.0.0.1:9190"], "--rpc-tracker needs --rpc-key as well"),
    (["--rpc-key", "pi"], "--rpc-key needs --rpc-tracker as well"),
    (["--rpc-tracker", "127.0.0.1", "--rpc-key", "pi"], "is not HOST:PORT"),
    (["--passes", "fold-constants,no-such-pass"], "no-such-pass"),
    (["-t", "orin", "--tune", "4"], "--tune is for CPU targets only"),
])
def test_bad_options(tmp_path: Path, cache_dir: Path, args: list[str],  # noqa: F811
                     message: str) -> None:
    target = [] if "-t" in args else ["-t", "rasp4b"]
    bad_input(tmp_path, [str(DIGITS), *target, "-o", str(tmp_path / "out"), *args], message,
              cache_dir)


def test_installed_script_reports_one_line(tmp_path: Path, cache_dir: Path) -> None:  # noqa: F811
    model = celu_model(tmp_path / "celu.onnx")
    result = subprocess.run([str(OPTC), "compile", str(model), "-t", "host", "-o",
                             str(tmp_path / "out")], capture_output=True, text=True,
                            env={**os.environ, "XDG_CACHE_HOME": str(cache_dir)},
                            timeout=300, check=False)
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert result.stderr.splitlines()[-1].startswith(
        "optc: error: operator 'Celu' is not supported by TVM")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["celu.onnx"]
