"""Artifact folders: the compiled library, the optimized ONNX model, a manifest, a report.

An artifact is written into a temporary folder beside its destination and renamed into
place only once complete, so a reader never sees half an artifact and a failed build
leaves any previous artifact untouched. ``load_artifact`` verifies every file's hash
before TVM loads the library.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import tvm
from tvm import relax

import optc
from optc.codegen.build import BuiltModule
from optc.codegen.host_cpu import machine_arch, missing_features, triple_arch
from optc.codegen.manifest import (
    LIBRARY,
    MANIFEST,
    ONNX,
    REPORT,
    Manifest,
    read_manifest,
    write_manifest,
)
from optc.errors import UserInputError
from optc.frontend import save_onnx

log = logging.getLogger(__name__)


def write_artifact(built: BuiltModule, out: str | Path,
                   report: Mapping[str, Any] | None = None) -> Path:
    """Write ``built`` as an artifact folder at ``out``, replacing an earlier artifact there.

    ``out`` may not exist, be an empty folder or an optc artifact; anything else is
    refused rather than deleted. ``report`` (JSON-serializable) becomes ``report.json``.
    """
    out = Path(out)
    parent = out.parent
    _check_replaceable(out)
    if not parent.is_dir():
        raise UserInputError(f"cannot write artifact {out}: folder {parent} does not exist")
    try:
        staging = Path(tempfile.mkdtemp(dir=parent, prefix=f".{out.name}.tmp-"))
    except OSError as exc:
        raise UserInputError(f"cannot write artifact {out}: {parent} is not writable "
                             f"({exc.strerror or exc})") from exc
    try:
        _fill(staging, built, report or {})
        replace_folder(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("wrote artifact %s", out)
    return out


def _check_replaceable(out: Path) -> None:
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise UserInputError(f"{out} exists and is not a folder; refusing to replace it")
    if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise UserInputError(f"{out} is a non-empty folder that is not an optc artifact; "
                             "refusing to replace it")


def _fill(folder: Path, built: BuiltModule, report: Mapping[str, Any]) -> None:
    started = time.perf_counter()
    built.export_library(folder / LIBRARY)  # LLVM emits the machine code only now
    export_s = time.perf_counter() - started
    save_onnx(built.graph, folder / ONNX)
    (folder / REPORT).write_text(json.dumps(dict(report), indent=2, sort_keys=True) + "\n")
    write_manifest(folder, {
        "optc_version": optc.__version__,
        "tvm_version": tvm.__version__,
        "model": built.graph.name,
        "graph_hash": built.graph.structural_hash(),
        "target": built.target,
        "cross_compiler": built.cross_compiler,
        "library_arch": built.library_arch,
        "inputs": [spec.to_json() for spec in built.inputs],
        "outputs": [spec.to_json() for spec in built.outputs],
        # CUDA kernels ship as nvcc binaries, or as source for NVRTC on the device.
        "cuda_kernels": None if built.target.get("kind") != "cuda" else (
            "fatbin" if built.device_binaries else "source"),
        "device_code": [{"format": b.fmt, "arch": b.arch, "source_sha256": b.source_sha256}
                        for b in built.device_binaries],
        "compile_seconds": round(built.compile_s, 3),
        "export_seconds": round(export_s, 3),
    })


def replace_folder(staged: Path, out: Path) -> None:
    """Rename ``staged`` to ``out``; an existing ``out`` is set aside first, then deleted.

    Each step is a rename on one file system, so ``out`` is at every moment either
    the old artifact, absent for an instant, or the new one; never a mixture.
    """
    if not out.exists():
        os.rename(staged, out)
        return
    old = out.with_name(f".{out.name}.old-{uuid.uuid4().hex[:8]}")
    os.rename(out, old)
    try:
        os.rename(staged, out)
    except OSError:
        os.rename(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)


@dataclasses.dataclass(frozen=True, eq=False)
class LoadedArtifact:
    """A verified artifact loaded into a Relax VM on ``device``."""

    manifest: Manifest
    vm: Any = dataclasses.field(repr=False)
    device: Any


def load_artifact(path: str | Path) -> LoadedArtifact:
    """Verify an artifact and load its library into a ``relax.VirtualMachine`` here.

    Libraries for another CPU, or whose code needs ISA features this CPU lacks, are
    refused (they would not load, or die with SIGILL): measure those on their device
    with ``measure_remote``.
    """
    manifest = read_manifest(path)
    host = manifest.host_target
    arch = triple_arch(str(host.get("mtriple") or manifest.data["library_arch"]))
    if arch != machine_arch():
        raise UserInputError(f"{manifest.folder}: built for {arch}, this machine is "
                             f"{machine_arch()}; run it on its device (measure_remote)")
    missing = missing_features(host)
    if missing:
        raise UserInputError(f"{manifest.folder}: built for CPU features this CPU lacks "
                             f"({', '.join(missing)}); rebuild for this host")
    device = _device(manifest)
    lib = tvm.runtime.load_module(str(manifest.library))
    return LoadedArtifact(manifest, relax.VirtualMachine(lib, device), device)


def _device(manifest: Manifest) -> Any:
    if manifest.device == "cpu":
        return tvm.cpu(0)
    device = tvm.cuda(0)
    if not device.exist:
        raise UserInputError(f"{manifest.folder}: a CUDA artifact, and this machine has no CUDA "
                             "GPU (or TVM without CUDA); run it on its device (measure_remote)")
    return device
