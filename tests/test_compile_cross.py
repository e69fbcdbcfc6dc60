"""``compile_model`` for devices that are not this machine: Orin (CUDA sm_87 kernels with an
AArch64 host library), Raspberry Pi 4B (AArch64) and H100 (CUDA sm_90). Nothing runs here:
the reports say so and why, and the checks are on what the libraries contain."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import tvm
from test_codegen_support import EM_AARCH64, EM_X86_64, elf_machine
from test_compile_support import DIGITS

from optc.codegen.cuda import fatbin_entries
from optc.compiler import compile_model

needs_cross = pytest.mark.skipif(shutil.which("aarch64-linux-gnu-g++") is None,
                                 reason="aarch64-linux-gnu-g++ missing")
needs_nvcc = pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc missing")


def manifest(artifact: Path) -> dict:
    return json.loads((artifact / "manifest.json").read_text())


@needs_cross
def test_orin_artifact(tmp_path: Path) -> None:
    result = compile_model(DIGITS, "orin", tmp_path / "orin")
    library = result.artifact / "model.so"
    assert elf_machine(library) == EM_AARCH64
    data = manifest(result.artifact)
    assert data["target"]["kind"] == "cuda" and data["target"]["arch"] == "sm_87"
    assert data["target"]["host"]["mtriple"] == "aarch64-linux-gnu"
    if shutil.which("nvcc"):
        assert set(fatbin_entries(library.read_bytes())) == {("sass", "sm_87"), ("ptx", "sm_87")}
        assert data["cuda_kernels"] == "fatbin"
    report = result.report
    assert report["measured"] is None
    assert "library is for aarch64" in report["measured_reason"]
    assert report["check"]["status"] == "skipped"
    assert report["predicted"]["latency_s"] > 0  # the roofline needs no device
    assert report["target"]["cross_compiler"] == "aarch64-linux-gnu-g++"


@needs_cross
def test_rasp4b_artifact(tmp_path: Path) -> None:
    result = compile_model(DIGITS, "rasp4b", tmp_path / "pi")
    assert elf_machine(result.artifact / "model.so") == EM_AARCH64
    data = manifest(result.artifact)
    assert data["target"]["mcpu"] == "cortex-a72" and data["cuda_kernels"] is None
    assert result.report["measured"] is None
    assert "library is for aarch64" in result.report["measured_reason"]


@needs_nvcc
def test_h100_artifact(tmp_path: Path) -> None:
    result = compile_model(DIGITS, "h100", tmp_path / "h100", repeat=2)
    library = result.artifact / "model.so"
    assert elf_machine(library) == EM_X86_64
    # The fatbin headers number the architecture (90); the manifest keeps the "a" variant.
    assert set(fatbin_entries(library.read_bytes())) == {("sass", "sm_90"), ("ptx", "sm_90")}
    assert [d["arch"] for d in manifest(result.artifact)["device_code"]] == ["sm_90a"]
    if tvm.cuda(0).exist and tvm.cuda(0).compute_version == "9.0":  # checked and timed here
        assert result.report["check"]["status"] == "passed"
        assert result.report["measured"]["where"] == "local cuda"
    else:
        assert result.report["measured"] is None
        assert "GPU" in result.report["measured_reason"]
