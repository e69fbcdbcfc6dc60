"""Artifact folders: contents, atomic replacement, refusals, hash verification, feeds, timing."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pytest
import tvm
from test_codegen_support import tiny_cnn, tiny_feeds

import optc
from optc.codegen import (
    BuiltModule,
    build,
    host_target,
    load_artifact,
    measure,
    read_manifest,
    run,
    write_artifact,
)
from optc.codegen.manifest import sha256_file
from optc.errors import UserInputError


@pytest.fixture(scope="module")
def built() -> BuiltModule:
    return build(tiny_cnn(), host_target())


@pytest.fixture
def artifact(built: BuiltModule, tmp_path: Path) -> Path:
    return write_artifact(built, tmp_path / "out", {"pipeline": "fold-constants"})


def test_artifact_contents(artifact: Path, built: BuiltModule) -> None:
    assert sorted(p.name for p in artifact.iterdir()) == [
        "manifest.json", "model.onnx", "model.so", "report.json"]
    manifest = json.loads((artifact / "manifest.json").read_text())
    assert manifest["optc_version"] == optc.__version__
    assert manifest["tvm_version"] == tvm.__version__
    assert manifest["target"]["kind"] == "llvm"
    assert manifest["target"]["mcpu"] == host_target()["mcpu"]
    assert manifest["inputs"] == [{"name": "x", "dtype": "float32", "shape": [1, 3, 8, 8]}]
    assert manifest["outputs"] == [{"name": "y", "dtype": "float32", "shape": [1, 5]},
                                   {"name": "k", "dtype": "int64", "shape": [1, 1]}]
    assert manifest["graph_hash"] == built.graph.structural_hash()
    assert manifest["cuda_kernels"] is None
    assert manifest["files"] == {p.name: sha256_file(p) for p in artifact.iterdir()
                                 if p.name != "manifest.json"}
    assert json.loads((artifact / "report.json").read_text()) == {"pipeline": "fold-constants"}
    saved = optc.load_onnx(artifact / "model.onnx")
    assert saved.structural_hash() == built.graph.structural_hash()


def test_existing_artifact_is_replaced_whole(artifact: Path, built: BuiltModule) -> None:
    (artifact / "stale.txt").write_text("from an older build")
    write_artifact(built, artifact, {"run": 2})
    assert not (artifact / "stale.txt").exists()
    assert json.loads((artifact / "report.json").read_text()) == {"run": 2}
    assert [p.name for p in artifact.parent.iterdir()] == ["out"]  # no temp folders left


def test_failed_write_keeps_previous_artifact(artifact: Path, built: BuiltModule) -> None:
    before = {p.name: p.read_bytes() for p in artifact.iterdir()}
    broken = dataclasses.replace(built, cross_compiler="no-such-cross-g++")
    with pytest.raises(UserInputError, match=r"cross compiler 'no-such-cross-g\+\+' not found"):
        write_artifact(broken, artifact, {"run": 2})
    assert {p.name: p.read_bytes() for p in artifact.iterdir()} == before
    assert [p.name for p in artifact.parent.iterdir()] == ["out"]


def test_non_artifact_folder_is_not_replaced(built: BuiltModule, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(UserInputError, match=r"not an optc artifact; refusing"):
        write_artifact(built, tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_parent_that_is_a_file_is_refused(built: BuiltModule, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(UserInputError, match=r"does not exist|not writable"):
        write_artifact(built, tmp_path / "file" / "out")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_unwritable_parent_is_refused(built: BuiltModule, tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(UserInputError, match=r"is not writable"):
        write_artifact(built, locked / "out")


def test_tampered_library_is_refused(artifact: Path) -> None:
    library = artifact / "model.so"
    data = bytearray(library.read_bytes())
    data[len(data) // 2] ^= 0xFF
    library.write_bytes(bytes(data))
    with pytest.raises(UserInputError, match=r"model.so does not match the SHA-256"):
        load_artifact(artifact)


def test_manifest_naming_outside_files_is_refused(artifact: Path) -> None:
    manifest = json.loads((artifact / "manifest.json").read_text())
    manifest["files"]["../model.so"] = manifest["files"]["model.so"]
    (artifact / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UserInputError, match=r"not a plain name"):
        read_manifest(artifact)


def test_missing_file_is_refused(artifact: Path) -> None:
    (artifact / "model.onnx").unlink()
    with pytest.raises(UserInputError, match=r"model.onnx is missing"):
        load_artifact(artifact)


def test_not_an_artifact(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match=r"not an optc artifact"):
        load_artifact(tmp_path)


def test_feeds_are_checked(artifact: Path) -> None:
    loaded = load_artifact(artifact)
    feeds = tiny_feeds()
    assert run(loaded, feeds)["y"].shape == (1, 5)
    with pytest.raises(UserInputError, match=r"missing \['x'\], unknown \['image'\]"):
        run(loaded, {"image": feeds["x"]})
    with pytest.raises(UserInputError, match=r"must be float32, got float64"):
        run(loaded, {"x": feeds["x"].astype(np.float64)})
    with pytest.raises(UserInputError, match=r"must have shape \[1, 3, 8, 8\]"):
        run(loaded, {"x": feeds["x"][:, :2]})


def test_measure(artifact: Path) -> None:
    timing = measure(load_artifact(artifact), tiny_feeds(), warmup=2, repeat=5)
    assert len(timing.samples_s) == 5
    assert all(s > 0 for s in timing.samples_s)
    assert timing.min_s <= timing.median_s <= timing.p90_s <= max(timing.samples_s)
    assert timing.to_json()["median_s"] == timing.median_s
    with pytest.raises(UserInputError, match=r"at least 1"):
        measure(load_artifact(artifact), repeat=0)
