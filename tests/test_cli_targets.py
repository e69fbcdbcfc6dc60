"""``optc targets``: the installed targets with their figures; ``--calibrate`` measures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from optc.cli.main import cli
from optc.target import load_targets


def invoke(*args: str, cache: Path) -> Result:
    """The CLI with a private per-user cache (XDG_CACHE_HOME), as a fresh user sees it."""
    return CliRunner().invoke(cli, list(args), env={"XDG_CACHE_HOME": str(cache)})


def test_targets_json(tmp_path: Path) -> None:
    result = invoke("targets", "--json", cache=tmp_path)
    assert result.exit_code == 0, result.stderr
    docs = json.loads(result.stdout)
    targets = load_targets(cache_dir=tmp_path / "optc")
    assert list(docs) == list(targets)
    for name, doc in docs.items():
        target = targets[name]
        assert doc["name"] == name
        assert doc["tvm_target"] == target.tvm_target_dict
        assert doc["peak_flops"] == dict(target.peak_flops)
        assert doc["pending"] == list(target.pending_figures())
        assert doc["distribution"] == "optc"
    assert docs["orin"]["memory_bandwidth"] == 204.8e9
    assert docs["orin"]["tvm_tag"] == "nvidia/jetson-agx-orin-64gb"
    assert docs["orin"]["supported_ops"] is None and docs["orin"]["fallback"] is None
    assert docs["host"]["peak_flops"]["float32"] == "measured"
    assert docs["host"]["calibration"] == "host-cpu"
    assert docs["host"]["cache"] == {"size": "measured", "bandwidth": "measured"}
    npu = docs["npu-example"]
    assert npu["tvm_byoc"] == "example_npu" and "Conv" in npu["supported_ops"]
    assert npu["fallback"]["link_bandwidth"] == 3e8
    assert docs["h100"]["peak_flops"]["tfloat32"] == 494.7e12


def test_targets_plain_text(tmp_path: Path) -> None:
    result = invoke("targets", cache=tmp_path)
    assert result.exit_code == 0, result.stderr
    lines = [line.split(None, 2) for line in result.stdout.splitlines()]
    assert ["memory", "bandwidth", "204.8 GB/s"] in lines
    assert ["peak", "float32", "5.3 TFLOP/s"] in lines
    assert ["peak", "float32", "measured (pending)"] in lines
    assert ["link", "bandwidth", "300 MB/s"] in lines
    assert ["tvm", "byoc", "example_npu"] in lines


def test_calibrate_host_then_list_it_measured(tmp_path: Path) -> None:
    result = invoke("targets", "--calibrate", "host", "--quick", "--json", cache=tmp_path)
    assert result.exit_code == 0, result.stderr
    host = json.loads(result.stdout)["host"]
    assert host["pending"] == []
    assert host["peak_flops"]["float32"] > 0 and host["cache"]["bandwidth"] > 0
    assert host["tvm_target"]["num-cores"] >= 1
    assert len(list((tmp_path / "optc").glob("host-*.json"))) == 1
    listed = json.loads(invoke("targets", "--json", cache=tmp_path).stdout)["host"]
    assert listed["peak_flops"] == host["peak_flops"]  # the cache is applied when listing


@pytest.mark.parametrize(("args", "message"), [
    (("--calibrate", "orin"), "target 'orin' has no micro-benchmark"),
    (("--calibrate", "hots"), "unknown target 'hots'; did you mean 'host'"),
    (("--quick",), "--quick only applies with --calibrate"),
    (("--fit",), "--fit only applies with --calibrate host"),
    (("--calibrate", "orin", "--fit"), "target 'orin' has no micro-benchmark"),
])
def test_calibrate_errors_exit_2(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    result = invoke("targets", *args, cache=tmp_path)
    assert result.exit_code == 2
    assert message in result.stderr


@pytest.mark.heavy
def test_calibrate_and_fit_host(tmp_path: Path) -> None:
    """A real quick fit: 12 generated models built and timed here (~1-2 minutes)."""
    result = invoke("targets", "--calibrate", "host", "--quick", "--fit", cache=tmp_path)
    assert result.exit_code == 0, result.stderr
    assert "fitted on 12 generated models" in result.stderr
    assert len(list((tmp_path / "optc").glob("host-fit-*.jsonl.gz"))) == 1
    host = json.loads(invoke("targets", "--json", cache=tmp_path).stdout)["host"]
    assert host["efficiency"] and all(0 < v <= 1 for v in host["efficiency"].values())
    assert "fitted on 12 generated models measured here" in host["sources"]["efficiency"]
