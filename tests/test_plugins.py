"""The example plugin, really installed (into a temporary folder, never the venv).

Each check runs in a fresh interpreter with ``PYTHONPATH`` pointing at the install
folder, exactly as a user's environment with the plugin installed would look.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from pass_support import (
    LIGHT,
    assert_outputs_close,
    light_model,
    op_count,
    ramp_inputs,
    run_onnxruntime,
)

import optc

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "optc-example-plugin"

DUPLICATE_PYPROJECT = """
[build-system]
requires = ["setuptools>=64"]
build-backend = "setuptools.build_meta"

[project]
name = "dup-plugin"
version = "0.0.1"

[project.entry-points."optc.passes"]
fold-constants = "dup_plugin:FoldConstants"

[tool.setuptools]
py-modules = ["dup_plugin"]
"""


def pip_install(source: Path, target: Path, scratch: Path) -> None:
    """Install ``source`` into ``target``, building from a copy so the repo stays clean."""
    build_copy = scratch / f"src-{source.name}"
    shutil.copytree(source, build_copy, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--no-build-isolation", "--no-input", "--disable-pip-version-check",
                    "--target", str(target), str(build_copy)],
                   check=True, capture_output=True, text=True, timeout=300)


def run_python(code: str, path: list[Path], allow: str | None = None) -> dict:
    """Run ``code`` in a fresh interpreter with ``path`` on PYTHONPATH; it prints JSON."""
    env = {k: v for k, v in os.environ.items() if k not in ("OPTC_PLUGINS", "PYTHONPATH")}
    env["PYTHONPATH"] = os.pathsep.join(str(p) for p in path)
    if allow is not None:
        env["OPTC_PLUGINS"] = allow
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, cwd=path[0],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    scratch = tmp_path_factory.mktemp("plugin")
    target = scratch / "site"
    pip_install(EXAMPLE, target, scratch)
    return target


LIST_PASSES = """
import json
from optc.pipeline import available_pass_plugins
print(json.dumps({name: p.distribution for name, p in available_pass_plugins().items()}))
"""


def test_installed_plugin_is_discovered(installed: Path) -> None:
    assert (installed / "optc_example_plugin-0.1.0.dist-info").is_dir()
    found = run_python(LIST_PASSES, [installed])
    assert found["remove-identity"] == "optc-example-plugin"
    assert found["fold-constants"] == "optc"


@pytest.mark.parametrize(("allow", "loaded"), [
    ("some-other-dist", False), ("optc_example_plugin", True), ("", False)])
def test_allow_list_decides_whether_it_loads(installed: Path, allow: str, loaded: bool) -> None:
    found = run_python(LIST_PASSES, [installed], allow=allow)
    assert ("remove-identity" in found) is loaded
    assert {"fold-constants", "eliminate-dead-code", "fold-batchnorm"} <= set(found)


def test_pipeline_with_the_plugin_on_a_real_model(installed: Path, tmp_path: Path) -> None:
    out = tmp_path / "squeezenet.opt.onnx"
    code = f"""
    import json
    import optc
    from optc.pipeline import VerifyInstrument, parse_pipeline
    graph = optc.load_onnx({str(LIGHT / "light_squeezenet.onnx")!r})
    pipeline = parse_pipeline("remove-identity,eliminate-dead-code")
    result = pipeline.run(graph, instruments=[VerifyInstrument(types=True)])
    optc.save_onnx(result.graph, {str(out)!r})
    print(json.dumps({{"text": str(pipeline),
                      "modified": [r.modified for r in result.records]}}))
    """
    report = run_python(code, [installed])
    assert report == {"text": "remove-identity,eliminate-dead-code", "modified": [True, False]}
    before, after = light_model("squeezenet"), optc.load_onnx(out)
    assert op_count(before, "Dropout") == 1 and op_count(after, "Dropout") == 0
    assert len(after.nodes) == len(before.nodes) - 1
    assert after.output_names == before.output_names
    feeds = ramp_inputs(before)
    assert_outputs_close(run_onnxruntime(before, feeds), run_onnxruntime(after, feeds))


def test_duplicate_pass_name_names_both_distributions(installed: Path, tmp_path: Path) -> None:
    dup_source = tmp_path / "dup-plugin"
    dup_source.mkdir()
    (dup_source / "pyproject.toml").write_text(DUPLICATE_PYPROJECT)
    (dup_source / "dup_plugin.py").write_text(
        '"""Claims a built-in pass name."""\n\n'
        "from optc.passes.fold_constants import FoldConstants\n\n"
        '__all__ = ["FoldConstants"]\n')
    dup_target = tmp_path / "dup-site"
    pip_install(dup_source, dup_target, tmp_path)
    code = """
    import json
    from optc.errors import PluginError
    from optc.pipeline import available_passes
    try:
        available_passes()
        print(json.dumps({"error": None}))
    except PluginError as exc:
        print(json.dumps({"error": str(exc)}))
    """
    error = run_python(code, [installed, dup_target])["error"]
    assert error is not None
    assert "'fold-constants' is registered twice" in error
    assert "dup-plugin" in error and "by optc" in error
    # Outside the allow-list the impostor is never looked at: no conflict.
    allowed = run_python(code, [installed, dup_target], allow="optc-example-plugin")
    assert allowed == {"error": None}
