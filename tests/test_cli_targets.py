"""``optc targets``: the installed targets with their figures."""

from __future__ import annotations

import json

from click.testing import CliRunner

from optc.cli.main import cli
from optc.target import load_targets


def test_targets_json() -> None:
    result = CliRunner().invoke(cli, ["targets", "--json"])
    assert result.exit_code == 0, result.stderr
    docs = json.loads(result.stdout)
    targets = load_targets()
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
    assert docs["host"]["peak_flops"]["float32"] == "measured"


def test_targets_plain_text() -> None:
    result = CliRunner().invoke(cli, ["targets"])
    assert result.exit_code == 0, result.stderr
    lines = [line.split(None, 2) for line in result.stdout.splitlines()]
    assert ["memory", "bandwidth", "204.8 GB/s"] in lines
    assert ["peak", "float32", "5.3 TFLOP/s"] in lines
    assert ["peak", "float32", "measured (pending)"] in lines
