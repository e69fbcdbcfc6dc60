"""What the schedules need to know about a CPU target: SIMD width and thread count."""

from __future__ import annotations

import os
from dataclasses import dataclass

import tvm
from tvm.target import codegen

_VNNI_LLVM = 17

CACHE_LINE_BYTES = 64
"""The cache line of the x86 and Arm cores optc targets: the unit weight panels, register
tiles and depthwise strips are sized to read whole."""


@dataclass(frozen=True)
class CpuInfo:
    """Vector and core resources of an ``llvm`` target.

    ``vector_bits`` is the widest SIMD register the target's features allow; ``registers``
    is how many of them exist, which bounds the accumulator tile of a contraction.
    """

    vector_bits: int
    registers: int
    cores: int
    vnni: bool = False  # AVX-512 VNNI: vpdpbusd, uint8 x int8 dot products into int32
    bf16: bool = False  # AVX-512 BF16: vdpbf16ps, bfloat16 pair products into float32

    def lanes(self, dtype_bits: int = 32) -> int:
        """SIMD lanes for elements of ``dtype_bits`` bits (at least 1)."""
        return max(self.vector_bits // dtype_bits, 1)


def _has(feature: str, target: tvm.target.Target) -> bool:
    try:
        return bool(codegen.target_has_features(feature, target))
    except (RuntimeError, ValueError):  # non-x86 LLVM targets may not know the feature name
        return False


def cpu_info(target: tvm.target.Target) -> CpuInfo:
    """Read SIMD width and core count from ``target``.

    ``llvm_get_vector_width`` in TVM 0.27 reports the host's width whatever the target says,
    so the width comes from the target's feature flags instead.
    """
    if _has("avx512f", target):
        bits, regs = 512, 32
    elif _has("avx", target):
        bits, regs = 256, 16
    elif _has("neon", target) or _has("sve", target):
        bits, regs = 128, 32
    else:
        bits, regs = 128, 16
    cores = target.attrs.get("num-cores")
    return CpuInfo(vector_bits=bits, registers=regs, cores=int(cores or os.cpu_count() or 1),
                   vnni=has_vnni(target), bf16=has_bf16_dot(target))


def has_vnni(target: tvm.target.Target) -> bool:
    """Whether ``target`` may use 512-bit ``vpdpbusd`` (``schedules/vnni.py``).

    LLVM 17 changed the intrinsic's operands to ``<64 x i8>``, the form ``vnni.py`` emits.
    """
    if target.kind.name != "llvm" or codegen.llvm_version_major() < _VNNI_LLVM:
        return False
    return _has("avx512vnni", target) and _has("avx512bw", target)


def has_bf16_dot(target: tvm.target.Target) -> bool:
    """Whether ``target`` has AVX-512 BF16's ``vdpbf16ps`` (32 bfloat16 products added in
    pairs into 16 float32 lanes; with AVX-512 VL, which every such CPU has, also the
    256-bit form on 8 lanes), which optc's bfloat16 contractions run on
    (``schedules/bf16_dot.py``); elsewhere a bfloat16 layer is widened to float32.

    The LLVM IR that calls it takes ``<32 x bfloat>`` operands, which LLVM 17 introduced."""
    if target.kind.name != "llvm" or codegen.llvm_version_major() < _VNNI_LLVM:
        return False
    return all(_has(f, target) for f in ("avx512bf16", "avx512bw", "avx512vl"))
