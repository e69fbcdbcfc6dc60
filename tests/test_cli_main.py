"""The ``optc`` group: help, version, exit codes, error lines, and the installed script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import click
import onnx
import pytest
from click.testing import CliRunner

import optc
from optc.cli.failures import OptcGroup, one_line
from optc.cli.main import cli
from optc.errors import BudgetNotMetError

LIGHT = Path(os.path.dirname(onnx.__file__)) / "backend" / "test" / "data" / "light"
OPTC = Path(sys.executable).parent / "optc"  # the console script of this environment
COMMANDS = ("show", "passes", "targets", "run-passes", "profile", "compile", "measure")


def test_help_documents_commands_and_exit_codes() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for command in COMMANDS:
        assert command in result.stdout
    assert "Exit codes:" in result.stdout
    for code in ("0  success", "1  internal error", "2  bad input", "3  the latency budget"):
        assert code in result.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_help_documents_exit_codes(command: str) -> None:
    result = CliRunner().invoke(cli, [command, "--help"])
    assert result.exit_code == 0
    assert "Exit codes:" in result.stdout and "2  bad input" in result.stdout


def test_version() -> None:
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"optc {optc.__version__}"


@pytest.mark.parametrize("args", [["no-such-command"], ["show"], ["show", "--frobnicate", "x"],
                                  ["passes", "--json=yes"], ["-v", "targets", "extra"]])
def test_usage_errors_exit_2(args: list[str]) -> None:
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.stderr


def _group_failing_with(exc: Exception) -> click.Group:
    """A real optc-style group whose only command raises ``exc``."""

    @click.group(cls=OptcGroup)
    def group() -> None:
        pass

    @group.command("fail")
    def fail() -> None:
        raise exc

    return group


def test_unexpected_exception_is_an_internal_error() -> None:
    result = CliRunner().invoke(_group_failing_with(ZeroDivisionError("division by zero")),
                                ["fail"])
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("optc: internal error: ZeroDivisionError: division by zero")
    assert "OPTC_DEBUG=1" in lines[0]


def test_internal_error_traceback_with_debug() -> None:
    result = CliRunner().invoke(_group_failing_with(KeyError("k")), ["fail"],
                                env={"OPTC_DEBUG": "1"})
    assert result.exit_code == 1
    assert "Traceback (most recent call last)" in result.stderr
    assert 'raise exc' in result.stderr


def test_optc_errors_keep_their_exit_code() -> None:
    result = CliRunner().invoke(_group_failing_with(BudgetNotMetError("no candidate fits 1 ms")),
                                ["fail"])
    assert result.exit_code == 3
    assert result.stderr == "optc: error: no candidate fits 1 ms\n"


def test_multi_line_messages_become_one_line() -> None:
    assert one_line("first\n  second\n\nthird ") == "first; second; third"
    assert one_line("") == "(no message)"


def test_verbose_logs_go_to_stderr(tmp_path: Path) -> None:
    out = tmp_path / "out.onnx"
    result = CliRunner().invoke(cli, ["-vv", "run-passes", str(LIGHT / "light_squeezenet.onnx"),
                                      "--passes", "eliminate-dead-code", "-o", str(out)])
    assert result.exit_code == 0, result.stderr
    assert "optc: DEBUG: optc.pipeline:" in result.stderr
    assert "optc: INFO: optc.cli.run_passes: wrote" in result.stderr
    assert "optc: " not in result.stdout.replace(f"wrote {out}", "")


# -- the installed console script ----------------------------------------------------------

def run_optc(*args: str, debug: bool = False) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "OPTC_DEBUG"}
    if debug:
        env["OPTC_DEBUG"] = "1"
    return subprocess.run([str(OPTC), *args], capture_output=True, text=True, env=env,
                          timeout=120, check=False)


def test_console_script_is_installed() -> None:
    assert OPTC.is_file(), "optc is not installed in this environment (pip install -e .)"
    done = run_optc("--version")
    assert done.returncode == 0
    assert done.stdout.strip() == f"optc {optc.__version__}"


def test_console_script_show_json() -> None:
    path = LIGHT / "light_resnet50.onnx"
    done = run_optc("show", str(path), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["nodes"] == len(onnx.load(str(path)).graph.node)


def test_console_script_bad_input(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes((LIGHT / "light_vgg19.onnx").read_bytes()[:500])
    done = run_optc("show", str(bad))
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1 and done.stderr.startswith(f"optc: error: {bad}")

    debug = run_optc("show", str(bad), debug=True)
    assert debug.returncode == 2
    assert "Traceback (most recent call last)" in debug.stderr

    usage = run_optc("show")
    assert usage.returncode == 2 and "Missing argument 'MODEL'" in usage.stderr


def test_console_script_closed_pipe_is_quiet() -> None:
    """``optc show --ir big.onnx | head -1`` must not print a traceback."""
    command = f"'{OPTC}' show --ir '{LIGHT / 'light_densenet121.onnx'}' | head -1"
    done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.stdout.startswith("graph ")
    assert "Traceback" not in done.stderr and "internal error" not in done.stderr
