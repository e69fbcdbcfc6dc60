"""Ahead-of-time CUDA kernel binaries for a compiled module.

TVM 0.27's PyPI wheel has no CUDA runtime: its CUDA code generator emits CUDA C++
source only, and a CUDA-enabled TVM runtime on the device compiles that source with
NVRTC when the library is loaded. optc compiles the source here instead, with ``nvcc``,
into a fatbin holding SASS for the target's ``arch`` plus its PTX (for newer GPUs), so
the device needs no compiler, loading is fast, and kernels that do not compile fail at
build time rather than on the device. Without ``nvcc`` the source is kept.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import re
import shutil
import struct
from collections.abc import Iterator
from typing import Any

import tvm

from optc.errors import UserInputError

log = logging.getLogger(__name__)

FATBIN_MAGIC = 0xBA55ED50
_FATBIN_ENTRY_KINDS = {1: "ptx", 2: "sass"}


@dataclasses.dataclass(frozen=True)
class DeviceBinary:
    """A compiled CUDA device module: ``data`` replaces the source of that hash and size."""

    source_sha256: str
    source_size: int
    fmt: str
    data: bytes = dataclasses.field(repr=False)
    arch: str


def cuda_modules(module: Any) -> Iterator[Any]:
    """The CUDA device modules in a runtime module's import tree."""
    stack = [module]
    while stack:
        mod = stack.pop()
        if mod.kind == "cuda":
            yield mod
        stack.extend(mod.imports)


def compile_cuda_kernels(executable: Any, target: tvm.target.Target) -> tuple[DeviceBinary, ...]:
    """nvcc-compile every CUDA source module of ``executable`` for ``target``'s arch.

    Returns nothing (the source stays, for NVRTC on the device) when nvcc is missing.
    """
    # A module imported twice appears twice in the tree; its source is compiled once.
    sources = list(dict.fromkeys(
        s for s in (m.inspect_source("cuda") for m in cuda_modules(executable.mod)) if s))
    if not sources:
        return ()
    if shutil.which("nvcc") is None:
        log.warning("nvcc not found: CUDA kernels stay as source, compiled by NVRTC on the "
                    "device when the library is loaded")
        return ()
    arch = cuda_arch(target)
    return tuple(_compile(source, arch, target) for source in sources)


def cuda_arch(target: tvm.target.Target) -> str:
    """The target's ``arch`` without the ``sm_`` prefix (``87``, ``90a``)."""
    arch = str(target.attrs.get("arch", ""))
    match = re.fullmatch(r"sm_(\d+[a-z]?)", arch)
    if match is None:
        raise UserInputError(f"CUDA target needs an 'arch' like 'sm_87', got {arch!r}")
    return match.group(1)


def _compile(source: str, arch: str, target: tvm.target.Target) -> DeviceBinary:
    from tvm.support import nvcc  # deferred: registers TVM's CUDA compile callbacks

    # SASS for this GPU plus PTX, which newer GPUs JIT-compile.
    gencode = ["-gencode", f"arch=compute_{arch},code=[sm_{arch},compute_{arch}]"]
    try:
        with target:  # nvcc.compile_cuda reads the current target's compute version
            data = nvcc.compile_cuda(source, target_format="fatbin", arch=gencode,
                                     compiler="nvcc")
    except RuntimeError as exc:
        error = str(exc).rpartition("Compilation error:")[2].strip()
        raise UserInputError(f"nvcc failed on TVM's CUDA kernels for sm_{arch}: "
                             f"{error.splitlines()[0] if error else exc}") from exc
    encoded = source.encode()
    log.info("CUDA kernels compiled for sm_%s: %d bytes of source -> %d bytes of fatbin",
             arch, len(source), len(data))
    return DeviceBinary(hashlib.sha256(encoded).hexdigest(), len(encoded), "fatbin", bytes(data),
                        f"sm_{arch}")


def fatbin_entries(data: bytes) -> list[tuple[str, str]]:
    """``(kind, arch)`` of every image in the fatbins found in ``data`` (a fatbin or a library).

    ``kind`` is ``"sass"`` (a cubin) or ``"ptx"``; ``arch`` like ``"sm_87"``. The layout
    (a 16-byte header, then entries with a 64-bit size and a 32-bit SM version at byte
    28) is the one CUDA's ``fatbinary`` writes.
    """
    entries = []
    start = data.find(struct.pack("<I", FATBIN_MAGIC))
    while start >= 0 and start + 16 <= len(data):
        _, header_size, body_size = struct.unpack_from("<HHQ", data, start + 4)
        pos, end = start + header_size, start + header_size + body_size
        while pos + 32 <= min(end, len(data)):
            kind, _, entry_header, size = struct.unpack_from("<HHIQ", data, pos)
            sm = struct.unpack_from("<I", data, pos + 28)[0]
            entries.append((_FATBIN_ENTRY_KINDS.get(kind, str(kind)), f"sm_{sm}"))
            pos += entry_header + size
        start = data.find(struct.pack("<I", FATBIN_MAGIC), max(end, start + 4))
    return entries
