"""``optc measure`` (and ``optc compile --rpc-tracker``): timing here and through a TVM RPC
tracker and server started on 127.0.0.1 by the tests; corrupted artifacts refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from test_compile_support import (
    DIGITS,
    RPC_HOST,
    RPC_KEY,
    cache_dir,  # noqa: F401 (a fixture)
    folder_state,
    free_port,
    tracker_port,  # noqa: F401 (a fixture)
)

from optc.cli.main import cli
from optc.compiler import compile_model


def invoke(*args: str, cache: Path) -> Result:
    return CliRunner().invoke(cli, list(args), env={"XDG_CACHE_HOME": str(cache)})


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Path:  # noqa: F811
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(cache_dir))
        return compile_model(DIGITS, "host", tmp_path_factory.mktemp("measure") / "digits",
                             repeat=2).artifact


def test_measure_here(artifact: Path, cache_dir: Path) -> None:  # noqa: F811
    result = invoke("measure", str(artifact), "--repeat", "4", "--json", cache=cache_dir)
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    measured = document["measured"]
    assert measured["repeat"] == 4 and measured["where"] == "local cpu"
    assert 0 < measured["min_s"] <= measured["median_s"] <= measured["p90_s"]
    report = json.loads((artifact / "report.json").read_text())
    assert document["predicted_s"] == report["predicted"]["latency_s"]
    assert document["measured_at_compile_s"] == report["measured"]["median_s"]
    assert document["target"] == "host" and document["rpc"] is None
    text = invoke("measure", str(artifact), "--repeat", "2", cache=cache_dir)
    assert text.exit_code == 0, text.stderr
    assert "(2 runs, local cpu)" in text.stdout and "predicted" in text.stdout


def test_measure_through_rpc_tracker(artifact: Path, tracker_port: int,  # noqa: F811
                                     cache_dir: Path) -> None:  # noqa: F811
    result = invoke("measure", str(artifact), "--rpc-tracker", f"{RPC_HOST}:{tracker_port}",
                    "--rpc-key", RPC_KEY, "--repeat", "3", "--json", cache=cache_dir)
    assert result.exit_code == 0, result.stderr
    measured = json.loads(result.stdout)["measured"]
    assert measured["repeat"] == 3 and measured["median_s"] > 0
    assert measured["where"].startswith(f"rpc {RPC_KEY}@{RPC_HOST}:{tracker_port}")


def test_compile_checks_and_times_on_the_rpc_device(tmp_path: Path, tracker_port: int,  # noqa: F811
                                                    cache_dir: Path) -> None:  # noqa: F811
    out = tmp_path / "remote"
    result = invoke("compile", str(DIGITS), "-t", "host", "-o", str(out), "--repeat", "2",
                    "--rpc-tracker", f"{RPC_HOST}:{tracker_port}", "--rpc-key", RPC_KEY,
                    "--json", cache=cache_dir)
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["check"]["status"] == "passed"
    assert report["measured"]["where"].startswith(f"rpc {RPC_KEY}@")
    assert report["rpc"] == f"{RPC_KEY}@{RPC_HOST}:{tracker_port}"


def test_unknown_key_and_unreachable_tracker(artifact: Path, tracker_port: int,  # noqa: F811
                                             cache_dir: Path) -> None:  # noqa: F811
    wrong_key = invoke("measure", str(artifact), "--rpc-tracker", f"{RPC_HOST}:{tracker_port}",
                       "--rpc-key", "no-such-board", cache=cache_dir)
    assert wrong_key.exit_code == 2
    assert "no device is registered under key 'no-such-board'" in wrong_key.stderr
    unreachable = invoke("measure", str(artifact), "--rpc-tracker", f"{RPC_HOST}:{free_port()}",
                         "--rpc-key", RPC_KEY, cache=cache_dir)
    assert unreachable.exit_code == 2
    assert "cannot reach the RPC tracker" in unreachable.stderr


@pytest.mark.parametrize(("damage", "message"), [
    ("library", "model.so does not match the SHA-256 in manifest.json"),
    ("report", "report.json does not match the SHA-256 in manifest.json"),
    ("manifest", "not an optc artifact (no manifest.json)"),
])
def test_corrupted_artifact_exit_2(artifact: Path, tmp_path: Path, cache_dir: Path,  # noqa: F811
                                   damage: str, message: str) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(artifact, copy)
    if damage == "library":
        data = bytearray((copy / "model.so").read_bytes())
        data[len(data) // 2] ^= 0xFF
        (copy / "model.so").write_bytes(bytes(data))
    elif damage == "report":
        (copy / "report.json").write_text('{"predicted": {"latency_s": 1e-9}}\n')
    else:
        (copy / "manifest.json").unlink()
    before = folder_state(copy)
    result = invoke("measure", str(copy), cache=cache_dir)
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr
    assert folder_state(copy) == before


def test_foreign_artifact_is_refused_here(tmp_path: Path, cache_dir: Path) -> None:  # noqa: F811
    out = tmp_path / "pi"
    assert invoke("compile", str(DIGITS), "-t", "rasp4b", "-o", str(out),
                  cache=cache_dir).exit_code == 0
    result = invoke("measure", str(out), cache=cache_dir)
    assert result.exit_code == 2
    assert "built for aarch64" in result.stderr
