"""``optc profile MODEL --target T``: per-node predictions as text and JSON."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner, Result

from optc.cli.main import cli
from optc.cost import RooflineModel
from optc.frontend import load_onnx
from optc.target import get_target

LIGHT = Path(onnx.__file__).resolve().parent / "backend" / "test" / "data" / "light"
SQUEEZENET = LIGHT / "light_squeezenet.onnx"


def invoke(*args: str, cache: Path) -> Result:
    return CliRunner().invoke(cli, list(args), env={"XDG_CACHE_HOME": str(cache)})


def test_profile_json_agrees_with_the_api(tmp_path: Path) -> None:
    result = invoke("profile", str(SQUEEZENET), "--target", "orin", "--json", cache=tmp_path)
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    model = RooflineModel()
    expected = model.breakdown(load_onnx(SQUEEZENET), get_target("orin"))
    assert doc["target"] == "orin" and doc["cost_model"] == model.uuid()
    assert doc["total"]["latency_s"] == pytest.approx(expected.total.latency_s)
    assert doc["total"]["flops"] == expected.total.flops
    assert len(doc["nodes"]) == len(expected.nodes)
    assert doc["top"] == [n.name for n in expected.top(10)]
    conv = next(n for n in doc["nodes"] if n["op"] == "Conv")
    assert {"name", "op", "flops", "bytes", "intensity", "bound", "latency_s"} <= set(conv)
    assert conv["intensity"] == pytest.approx(conv["flops"] / conv["bytes"])
    assert doc["bounds"]["folded"] == sum(1 for n in doc["nodes"] if n["bound"] == "folded")


def test_profile_text_table_totals_and_top(tmp_path: Path) -> None:
    result = invoke("profile", str(SQUEEZENET), "-t", "rasp4b", "--top", "3", cache=tmp_path)
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert f"{SQUEEZENET} on rasp4b: per node" in out
    header = next(line for line in out.splitlines() if line.split()[:2] == ["op", "name"])
    assert header.split() == ["op", "name", "device", "dtype", "FLOPs", "bytes", "FLOP/B",
                              "bound", "time", "%"]
    assert "predicted time" in out and "kernel launches" in out
    assert "top 3 nodes" in out
    assert "ConstantOfShape" not in out  # folded constants only with --all
    everything = invoke("profile", str(SQUEEZENET), "-t", "rasp4b", "--all", cache=tmp_path)
    assert "folded" in everything.stdout


def test_profile_on_the_host_uses_the_calibration(tmp_path: Path) -> None:
    calibrated = invoke("targets", "--calibrate", "host", "--quick", cache=tmp_path)
    assert calibrated.exit_code == 0, calibrated.stderr
    result = invoke("profile", str(SQUEEZENET), "--target", "host", "--json", cache=tmp_path)
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["total"]["latency_s"] > 0
    assert {n["device"] for n in doc["nodes"] if n["bound"] != "folded"} <= {"cpu", ""}


@pytest.mark.parametrize(("args", "message"), [
    (("--target", "orn"), "unknown target 'orn'; did you mean 'orin'"),
    (("--target", "orin", "--cost-model", "magic"), "unknown cost model 'magic'"),
])
def test_profile_bad_names_exit_2(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    result = invoke("profile", str(SQUEEZENET), *args, cache=tmp_path)
    assert result.exit_code == 2
    assert message in result.stderr


def test_profile_bad_model_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(SQUEEZENET.read_bytes()[:300])
    result = invoke("profile", str(bad), "--target", "orin", cache=tmp_path)
    assert result.exit_code == 2
    assert result.stderr.startswith("optc: error:") and "Traceback" not in result.stderr
    missing = invoke("profile", str(tmp_path / "nope.onnx"), "--target", "orin", cache=tmp_path)
    assert missing.exit_code == 2


def test_profile_symbolic_input_exits_2_naming_the_value(tmp_path: Path) -> None:
    model = onnx.load(SQUEEZENET)
    weights = {t.name for t in model.graph.initializer}
    data = next(v for v in model.graph.input if v.name not in weights)
    data.type.tensor_type.shape.dim[0].dim_param = "batch"
    path = tmp_path / "batched.onnx"
    onnx.save(model, path)
    result = invoke("profile", str(path), "--target", "orin", cache=tmp_path)
    assert result.exit_code == 2
    assert "no static shape" in result.stderr and "'batch'" in result.stderr
