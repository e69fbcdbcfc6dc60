"""``optc passes`` and ``optc run-passes`` on real models, checked with onnxruntime."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner, Result
from onnx import numpy_helper

from optc.cli.main import cli
from optc.pipeline import available_passes

LIGHT = Path(os.path.dirname(onnx.__file__)) / "backend" / "test" / "data" / "light"
BUILTIN = ("eliminate-dead-code", "fold-batchnorm", "fold-constants")
PIPELINE = "fold-constants,fold-batchnorm,eliminate-dead-code"


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


# -- optc passes -------------------------------------------------------------------------

def test_passes_json_lists_the_builtins() -> None:
    result = invoke("passes", "--json")
    assert result.exit_code == 0, result.stderr
    docs = {d["name"]: d for d in json.loads(result.stdout)}
    assert set(BUILTIN) <= set(docs)
    assert list(docs) == sorted(docs)
    installed = available_passes()
    for name in BUILTIN:
        doc = docs[name]
        assert set(doc) == {"name", "exact", "distribution", "builtin", "entry_point",
                            "summary", "requires", "options"}
        assert doc["distribution"] == "optc" and doc["builtin"] is True
        assert doc["exact"] is installed[name].exact is True
        assert doc["summary"] and "\n" not in doc["summary"]
        for option in doc["options"]:
            assert set(option) == {"name", "type", "required", "default", "default_text", "help"}
            assert option["help"]
    fold = {o["name"]: o for o in docs["fold-constants"]["options"]}
    spec = {s.name: s for s in installed["fold-constants"].options()}
    assert fold.keys() == spec.keys()
    for name, option in fold.items():
        assert option["default"] == spec[name].default
        assert option["type"] == spec[name].type_text()


def test_passes_plain_text() -> None:
    result = invoke("passes")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    for name in BUILTIN:
        assert any(line.split()[:2] == [name, "exact"] for line in lines), name


# -- optc run-passes ---------------------------------------------------------------------

def _light_input(session: ort.InferenceSession) -> dict[str, np.ndarray]:
    """The input onnx's backend runner feeds the light models (their reference outputs)."""
    feeds = {}
    for arg in session.get_inputs():
        size = int(np.prod(arg.shape))
        feeds[arg.name] = (np.arange(size).reshape(arg.shape) / size).astype(np.float32)
    return feeds


def _run(path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


@pytest.mark.parametrize("model", ["light_resnet50", "light_inception_v2", "light_squeezenet"])
def test_run_passes_keeps_outputs(tmp_path: Path, model: str) -> None:
    source = LIGHT / f"{model}.onnx"
    out = tmp_path / "out.onnx"
    result = invoke("run-passes", str(source), "--passes", PIPELINE, "-o", str(out), "--verify")
    assert result.exit_code == 0, result.stderr
    onnx.checker.check_model(onnx.load(str(out)), full_check=True)

    session = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"])
    feeds = _light_input(session)
    expected = session.run(None, feeds)
    actual = _run(out, feeds)
    reference = numpy_helper.to_array(onnx.load_tensor(str(LIGHT / f"{model}_output_0.pb")))
    np.testing.assert_allclose(expected[0], reference, rtol=1e-3, atol=1e-5)
    for want, got in zip(expected, actual, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)

    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines()[2:]
            if line.strip()}
    for name in PIPELINE.split(","):
        assert rows[name][1] in ("yes", "no") and rows[name][3] in ("s", "ms", "µs", "ns")
    before = len(onnx.load(str(source)).graph.node)
    after = len(onnx.load(str(out)).graph.node)
    assert rows["total"][4:7] == [str(before), "->", str(after)]
    assert after < before  # the light models compute their weights: folding must fire


def test_run_passes_dumps_ir(tmp_path: Path) -> None:
    out, dump = tmp_path / "out.onnx", tmp_path / "ir"
    result = invoke("run-passes", str(LIGHT / "light_squeezenet.onnx"), "--passes", PIPELINE,
                    "-o", str(out), "--dump-ir", str(dump))
    assert result.exit_code == 0, result.stderr
    names = sorted(p.name for p in dump.iterdir())
    assert names == sorted(f"{i:02d}-{name}-{when}.ir" for i, name in
                           enumerate(PIPELINE.split(","), start=1)
                           for when in ("before", "after"))
    assert (dump / "01-fold-constants-before.ir").read_text().startswith("graph ")


@pytest.mark.parametrize(("passes", "named"), [
    ("fold-constants,fold-constantz", "fold-constantz"),
    ("no-such-pass", "no-such-pass"),
    ("fold-constants{max-bytes=lots}", "max-bytes"),
    ("fold-constants{nope=1}", "nope"),
    ("fold-constants{max-bytes=1", "'}'"),
])
def test_bad_pipeline_exits_2_naming_it(tmp_path: Path, passes: str, named: str) -> None:
    out = tmp_path / "out.onnx"
    result = invoke("run-passes", str(LIGHT / "light_squeezenet.onnx"), "--passes", passes,
                    "-o", str(out))
    assert result.exit_code == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("optc: error: ") and named in lines[0]
    assert not out.exists()


@pytest.mark.parametrize("where", ["missing-folder", "folder", "file-as-folder", "proc"])
def test_unwritable_output_exits_2_and_leaves_nothing(tmp_path: Path, where: str) -> None:
    (tmp_path / "plain-file").write_text("x")
    out = {
        "missing-folder": tmp_path / "no" / "such" / "out.onnx",
        "folder": tmp_path,
        "file-as-folder": tmp_path / "plain-file" / "out.onnx",
        "proc": Path("/proc/optc-out.onnx"),  # refused at write time, even to root
    }[where]
    before = sorted(tmp_path.rglob("*"))
    result = invoke("run-passes", str(LIGHT / "light_squeezenet.onnx"), "--passes", PIPELINE,
                    "-o", str(out))
    assert result.exit_code == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("optc: error: ") and str(out) in lines[0]
    assert sorted(tmp_path.rglob("*")) == before
    assert not out.is_file()


def test_missing_required_option_is_a_usage_error(tmp_path: Path) -> None:
    result = invoke("run-passes", str(LIGHT / "light_squeezenet.onnx"), "-o",
                    str(tmp_path / "out.onnx"))
    assert result.exit_code == 2
    assert "Missing option '--passes'" in result.stderr


def test_bad_model_is_reported_before_anything_is_written(tmp_path: Path) -> None:
    bad, out = tmp_path / "bad.onnx", tmp_path / "out.onnx"
    bad.write_bytes(b"\x08\x07garbage")
    result = invoke("run-passes", str(bad), "--passes", PIPELINE, "-o", str(out))
    assert result.exit_code == 2
    assert result.stderr.startswith(f"optc: error: {bad}")
    assert not out.exists()
