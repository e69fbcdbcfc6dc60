"""``optc show`` on real models, and on files that are not models."""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner, Result
from onnx import numpy_helper

import optc
from optc.cli.main import cli
from optc.cli.summary import SUMMARY_KEYS

LIGHT = Path(os.path.dirname(onnx.__file__)) / "backend" / "test" / "data" / "light"
LIGHT_MODELS = sorted(LIGHT.glob("*.onnx"))


def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), env=env)


def test_light_models_are_present() -> None:
    assert len(LIGHT_MODELS) >= 9  # resnet50, squeezenet, densenet121, ... ship with onnx


@pytest.mark.parametrize("path", LIGHT_MODELS, ids=lambda p: p.stem)
def test_show_json_matches_onnx(path: Path) -> None:
    result = invoke("show", str(path), "--json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert tuple(doc) == SUMMARY_KEYS
    model = onnx.load(str(path))
    graph = model.graph
    assert doc["nodes"] == len(graph.node)
    assert sum(doc["ops"].values()) == len(graph.node)
    assert doc["ops"] == dict(Counter(n.op_type for n in graph.node))
    assert list(doc["ops"].values()) == sorted(doc["ops"].values(), reverse=True)
    initializers = [numpy_helper.to_array(t) for t in graph.initializer]
    assert doc["params"] == {"tensors": len(initializers),
                             "elements": int(sum(a.size for a in initializers)),
                             "bytes": int(sum(a.nbytes for a in initializers))}
    init_names = {t.name for t in graph.initializer}
    onnx_inputs = [vi for vi in graph.input if vi.name not in init_names]
    assert [i["name"] for i in doc["inputs"]] == [vi.name for vi in onnx_inputs]
    assert [o["name"] for o in doc["outputs"]] == [vi.name for vi in graph.output]
    for entry, vi in zip(doc["inputs"], onnx_inputs, strict=True):
        dims = [d.dim_value for d in vi.type.tensor_type.shape.dim]
        assert entry["shape"] == dims
        assert entry["dtype"] == onnx.helper.tensor_dtype_to_np_dtype(
            vi.type.tensor_type.elem_type).name
    assert doc["opsets"] == {(o.domain or "ai.onnx"): o.version for o in model.opset_import}


@pytest.mark.parametrize("path", LIGHT_MODELS, ids=lambda p: p.stem)
def test_show_plain_text(path: Path) -> None:
    result = invoke("show", str(path))
    assert result.exit_code == 0, result.stderr
    count = len(onnx.load(str(path), load_external_data=False).graph.node)
    assert re.search(rf"^ +nodes +{count}$", result.stdout, re.MULTILINE), result.stdout
    assert "\x1b[" not in result.stdout  # not a terminal: no colour codes
    assert result.stderr == ""


def test_show_reports_exact_and_human_param_bytes() -> None:
    path = LIGHT / "light_densenet121.onnx"
    graph = optc.load_onnx(path)
    result = invoke("show", str(path))
    exact = graph.param_bytes()
    assert exact > 1024
    assert f"{exact / 1024:.1f} KiB ({exact} bytes)" in result.stdout


def test_show_ir_prints_canonical_text() -> None:
    path = LIGHT / "light_squeezenet.onnx"
    result = invoke("show", str(path), "--ir")
    assert result.exit_code == 0, result.stderr
    graph = optc.load_onnx(path)
    assert result.stdout == optc.print_graph(graph)
    reparsed = optc.parse_graph(result.stdout, tensors=optc.ir.tensor_store(graph))
    assert reparsed.structural_hash() == graph.structural_hash()


def test_json_and_ir_together_is_a_usage_error() -> None:
    result = invoke("show", str(LIGHT / "light_squeezenet.onnx"), "--json", "--ir")
    assert result.exit_code == 2
    assert "cannot be combined" in result.stderr


def _bad_files(tmp_path: Path) -> dict[str, Path]:
    real = (LIGHT / "light_resnet50.onnx").read_bytes()
    files = {
        "truncated": real[: len(real) // 3],
        "garbage": np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
        "empty": b"",
        "text": b"graph main {\n}\n",
    }
    paths = {}
    for name, data in files.items():
        paths[name] = tmp_path / f"{name}.onnx"
        paths[name].write_bytes(data)
    paths["missing"] = tmp_path / "missing.onnx"
    paths["directory"] = tmp_path
    return paths


@pytest.mark.parametrize("kind", ["truncated", "garbage", "empty", "text", "missing",
                                  "directory"])
def test_bad_model_file_exits_2_with_one_line(tmp_path: Path, kind: str) -> None:
    path = _bad_files(tmp_path)[kind]
    for args in (["show", str(path)], ["show", str(path), "--json"]):
        result = invoke(*args)
        assert result.exit_code == 2, (kind, result.stderr)
        assert result.stdout == ""
        lines = result.stderr.splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith("optc: error: ") and str(path) in lines[0]
        assert "Traceback" not in result.stderr


def test_debug_setting_shows_the_traceback(tmp_path: Path) -> None:
    path = _bad_files(tmp_path)["truncated"]
    result = invoke("show", str(path), env={"OPTC_DEBUG": "1"})
    assert result.exit_code == 2
    assert "Traceback (most recent call last)" in result.stderr
    assert "InvalidModelError" in result.stderr
    assert result.stderr.rstrip().splitlines()[-1].startswith("optc: error: ")


def test_control_flow_bodies_are_counted_apart(tmp_path: Path) -> None:
    h, f32 = onnx.helper, onnx.TensorProto.FLOAT
    branch = {name: h.make_graph(
        [h.make_node("Constant", [], [f"{name}_c"], value=h.make_tensor("v", f32, [1], [1.0])),
         h.make_node(op, ["x", f"{name}_c"], [f"{name}_out"])],
        name, [], [h.make_tensor_value_info(f"{name}_out", f32, [1])])
        for name, op in (("then", "Add"), ("else", "Sub"))}
    graph = h.make_graph(
        [h.make_node("If", ["cond"], ["y"], then_branch=branch["then"],
                     else_branch=branch["else"])],
        "branchy", [h.make_tensor_value_info("cond", onnx.TensorProto.BOOL, []),
                    h.make_tensor_value_info("x", f32, [1])],
        [h.make_tensor_value_info("y", f32, [1])])
    path = tmp_path / "if.onnx"
    onnx.save(h.make_model(graph, opset_imports=[h.make_opsetid("", 17)]), str(path))
    result = invoke("show", str(path), "--json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert (doc["nodes"], doc["subgraph_nodes"], doc["ops"]) == (1, 4, {"If": 1})
    assert doc["inputs"][0] == {"name": "cond", "dtype": "bool", "shape": []}
    plain = invoke("show", str(path))
    assert "1 (+4 in control-flow bodies)" in plain.stdout
