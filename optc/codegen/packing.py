"""Pack a module's imports into its shared library, with CUDA source swapped for binaries.

``export_library`` serializes the modules a host library imports (the Relax VM
executable, CUDA device modules) into one blob, ``__tvm_ffi__library_bin``, compiled
into the library. TVM 0.27's CUDA-less wheel can only serialize CUDA modules as source
(format ``cuda``); the CUDA runtime's loader accepts ``fatbin`` / ``cubin`` / ``ptx``
payloads the same way. ``fpack_imports`` here asks TVM for the blob as C source, swaps
each CUDA payload whose source has an ahead-of-time binary, and writes the C back.

Blob layout (tvm-ffi ``library_module``): u64 size, u64-vector import-tree row
pointers, u64-vector child indices, then per module a length-prefixed kind string and,
unless the kind is ``_lib``, a length-prefixed payload. A CUDA payload is format string,
function table, code bytes (``CUDAModuleNode::SaveToBytes``). Integers are little-endian.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Callable
from typing import Any

from optc.codegen.cuda import DeviceBinary
from optc.errors import OptcError

_U64 = struct.Struct("<Q")
_NO_PAYLOAD = ("_lib", "_import_tree")


def _read_bytes(data: bytes, pos: int) -> tuple[bytes, int]:
    (size,) = _U64.unpack_from(data, pos)
    start = pos + _U64.size
    if start + size > len(data):
        raise ValueError("truncated TVM library blob")
    return data[start:start + size], start + size


def _bytes(chunk: bytes) -> bytes:
    return _U64.pack(len(chunk)) + chunk


def split_blob(blob: bytes) -> tuple[bytes, list[tuple[str, bytes | None]]]:
    """``(import-tree header, [(kind, payload or None)])`` of a library blob (size excluded)."""
    pos = _U64.size
    for _ in range(2):  # row pointers, child indices: u64 count then that many u64s
        (count,) = _U64.unpack_from(blob, pos)
        pos += _U64.size * (count + 1)
    header = blob[_U64.size:pos]
    modules: list[tuple[str, bytes | None]] = []
    while pos < len(blob):
        kind_bytes, pos = _read_bytes(blob, pos)
        kind = kind_bytes.decode()
        payload = None
        if kind not in _NO_PAYLOAD:
            payload, pos = _read_bytes(blob, pos)
        modules.append((kind, payload))
    return header, modules


def join_blob(header: bytes, modules: list[tuple[str, bytes | None]]) -> bytes:
    body = header + b"".join(
        _bytes(kind.encode()) + (b"" if payload is None else _bytes(payload))
        for kind, payload in modules)
    return _U64.pack(len(body)) + body


def swap_cuda_code(blob: bytes, binaries: list[DeviceBinary]) -> tuple[bytes, int]:
    """The blob with CUDA source payloads replaced by their binaries, and how many
    CUDA source payloads had no binary (and stay source).

    The function table between a payload's format and code has no length prefix of its
    own, so the code chunk is located from the end with the source's known size and
    confirmed by its SHA-256.
    """
    header, modules = split_blob(blob)
    left = 0
    for index, (kind, payload) in enumerate(modules):
        if kind != "cuda" or payload is None:
            continue
        fmt, fmap_start = _read_bytes(payload, 0)
        if fmt != b"cuda":
            continue
        for binary in binaries:
            split = len(payload) - _U64.size - binary.source_size
            if split < fmap_start or _U64.unpack_from(payload, split)[0] != binary.source_size:
                continue
            if hashlib.sha256(payload[split + _U64.size:]).hexdigest() == binary.source_sha256:
                modules[index] = (kind, _bytes(binary.fmt.encode()) + payload[fmap_start:split]
                                  + _bytes(binary.data))
                break
        else:
            left += 1
    return join_blob(header, modules), left


PackImports = Callable[[Any, bool, str, str], str]
"""``export_library``'s ``fpack_imports``: (module, is_system_lib, prefix, workdir) -> file."""

BLOB_SYMBOL = "__tvm_ffi__library_bin"
"""The symbol TVM's library loader looks up (shared libraries carry no symbol prefix)."""

# GNU assembler source placing the blob file under BLOB_SYMBOL; ``%object`` and
# ``%progbits`` are spelled the way both x86 and Arm assemblers accept.
_ASSEMBLY = """\
\t.section .rodata
\t.balign 16
\t.globl {symbol}
\t.type {symbol}, %object
{symbol}:
\t.incbin "{blob}"
\t.size {symbol}, . - {symbol}
\t.section .note.GNU-stack,"",%progbits
"""


def pack_imports(binaries: list[DeviceBinary]) -> PackImports:
    """An ``fpack_imports`` that embeds TVM's import blob, CUDA source swapped for binaries.

    The blob goes in through the assembler's ``.incbin`` rather than as a C array:
    blobs carry the weights (hundreds of MB for large models), which C compilers parse
    slowly and assemblers copy at disk speed.
    """

    def _pack(module: Any, is_system_lib: bool, prefix: str, workspace_dir: str) -> str:
        import tvm_ffi

        if is_system_lib:
            raise OptcError("optc does not build TVM system libraries")
        to_tensor = tvm_ffi.get_global_func("runtime.ModulePackImportsToTensor")
        blob = to_tensor(module).numpy().tobytes()
        blob, left = swap_cuda_code(blob, binaries)
        if left:
            raise OptcError(f"{left} CUDA module(s) have no compiled binary; this is a bug")
        blob_path = os.path.join(workspace_dir, "devc.bin")
        with open(blob_path, "wb") as out:
            out.write(blob)
        path = os.path.join(workspace_dir, "devc.s")
        with open(path, "w") as out:
            out.write(_ASSEMBLY.format(symbol=BLOB_SYMBOL, blob=blob_path))
        return path

    return _pack
