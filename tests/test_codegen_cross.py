"""Cross compilation: AArch64 CPU libraries, CUDA for Orin (sm_87, AArch64 host) and sm_90.

Nothing here runs on the device (no GPU, no Arm CPU here): the checks are on what the
libraries contain. The CUDA kernels' binaries need nvcc; without it the source stays.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import tvm
import tvm_ffi
from pass_support import light_model
from test_codegen_support import EM_AARCH64, EM_X86_64, elf_machine, tiny_cnn, tiny_feeds

from optc.codegen import BuiltModule, build, load_artifact, run, write_artifact
from optc.codegen.cuda import cuda_modules, fatbin_entries
from optc.codegen.host_cpu import host_target
from optc.codegen.packing import pack_imports, split_blob, swap_cuda_code
from optc.errors import UserInputError

CROSS = "aarch64-linux-gnu-g++"
ORIN_HOST = {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a78",
             "num-cores": 12}
needs_cross = pytest.mark.skipif(shutil.which(CROSS) is None,
                                 reason=f"{CROSS} missing (apt-get install g++-aarch64-linux-gnu)")
needs_nvcc = pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc missing")


@pytest.fixture(scope="module")
def orin_squeezenet() -> BuiltModule:
    return build(light_model("squeezenet"), {"kind": "cuda", "arch": "sm_87"}, host=ORIN_HOST,
                 cross_compiler=CROSS)


@needs_cross
def test_aarch64_cpu_library(tmp_path: Path) -> None:
    built = build(light_model("squeezenet"), ORIN_HOST, cross_compiler=CROSS)
    artifact = write_artifact(built, tmp_path / "arm")
    assert elf_machine(artifact / "model.so") == EM_AARCH64
    assert json.loads((artifact / "manifest.json").read_text())["library_arch"] == "aarch64"
    with pytest.raises(UserInputError, match=r"built for aarch64, this machine is"):
        load_artifact(artifact)


@needs_cross
def test_orin_cuda_library_embeds_kernels(orin_squeezenet: BuiltModule, tmp_path: Path) -> None:
    sources = [m.inspect_source("cuda") for m in cuda_modules(orin_squeezenet.executable.mod)]
    assert len(sources) == 1 and sources[0].count("__global__") > 10
    artifact = write_artifact(orin_squeezenet, tmp_path / "orin")
    assert elf_machine(artifact / "model.so") == EM_AARCH64
    manifest = json.loads((artifact / "manifest.json").read_text())
    assert manifest["target"]["arch"] == "sm_87"
    assert manifest["target"]["host"]["mtriple"] == "aarch64-linux-gnu"


@needs_cross
@needs_nvcc
def test_orin_cuda_library_has_sm87_binary(orin_squeezenet: BuiltModule, tmp_path: Path) -> None:
    assert [b.arch for b in orin_squeezenet.device_binaries] == ["sm_87"]
    artifact = write_artifact(orin_squeezenet, tmp_path / "orin")
    library = (artifact / "model.so").read_bytes()
    assert set(fatbin_entries(library)) == {("sass", "sm_87"), ("ptx", "sm_87")}
    assert b"__global__" not in library  # the binary replaced the source
    manifest = json.loads((artifact / "manifest.json").read_text())
    assert manifest["cuda_kernels"] == "fatbin"
    assert manifest["device_code"][0]["arch"] == "sm_87"


@needs_nvcc
def test_sm90_x86_64_cuda_library(tmp_path: Path) -> None:
    # An input name that is no C identifier (as in ResNet50) must not reach the CUDA source.
    built = build(tiny_cnn(input_name="gpu_0/data.0"), {"kind": "cuda", "arch": "sm_90"},
                  host={"kind": "llvm", "mtriple": "x86_64-linux-gnu"})
    assert [s.name for s in built.inputs] == ["gpu_0/data.0"]
    artifact = write_artifact(built, tmp_path / "h100")
    assert elf_machine(artifact / "model.so") == EM_X86_64
    assert set(fatbin_entries((artifact / "model.so").read_bytes())) == {
        ("sass", "sm_90"), ("ptx", "sm_90")}
    if not tvm.cuda(0).exist:
        with pytest.raises(UserInputError, match="no CUDA GPU"):
            load_artifact(artifact)


def test_without_nvcc_kernels_stay_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         ) -> None:
    """A machine without nvcc still builds; the device's TVM compiles the source (NVRTC)."""
    monkeypatch.setenv("PATH", os.pathsep.join(
        d for d in os.environ["PATH"].split(os.pathsep) if not (Path(d) / "nvcc").exists()))
    built = build(tiny_cnn(), {"kind": "cuda", "arch": "sm_90"},
                  host={"kind": "llvm", "mtriple": "x86_64-linux-gnu"})
    assert built.device_binaries == ()
    artifact = write_artifact(built, tmp_path / "source")
    library = (artifact / "model.so").read_bytes()
    assert b"__global__" in library and fatbin_entries(library) == []
    assert json.loads((artifact / "manifest.json").read_text())["cuda_kernels"] == "source"


@needs_nvcc
def test_swapped_blob_keeps_the_function_table(orin_squeezenet: BuiltModule) -> None:
    pack = tvm_ffi.get_global_func("runtime.ModulePackImportsToTensor")
    blob = pack(orin_squeezenet.executable.mod).numpy().tobytes()
    swapped, left = swap_cuda_code(blob, list(orin_squeezenet.device_binaries))
    assert left == 0
    before, after = [dict(split_blob(b)[1])["cuda"] for b in (blob, swapped)]
    binary = orin_squeezenet.device_binaries[0]
    assert before is not None and after is not None
    assert before.startswith(b"\x04" + b"\x00" * 7 + b"cuda")
    assert after.startswith(b"\x06" + b"\x00" * 7 + b"fatbin")
    assert after.endswith(binary.data)
    table = before[12:len(before) - 8 - binary.source_size]
    assert after[14:len(after) - 8 - len(binary.data)] == table


def test_packed_cpu_library_loads_and_runs(tmp_path: Path) -> None:
    """The same packing path with nothing to swap, on a library that can run here."""
    built = build(tiny_cnn(), host_target())
    default, packed = tmp_path / "default.so", tmp_path / "packed.so"
    built.executable.export_library(str(default))
    built.executable.export_library(str(packed), fpack_imports=pack_imports([]))
    feeds = tiny_feeds()
    results = []
    for path in (default, packed):
        vm = tvm.relax.VirtualMachine(tvm.runtime.load_module(str(path)), tvm.cpu())
        results.append(vm["main"](tvm.runtime.tensor(feeds["x"]))[0].numpy())
    assert (results[0] == results[1]).all()
    artifact = write_artifact(built, tmp_path / "art")
    assert (run(load_artifact(artifact), feeds)["y"] == results[0]).all()
