"""How many bits an int8 layer's weight codes may use on the compile target.

On x86 with AVX2 but no AVX-512 VNNI (Zen 3, Haswell to Ice Lake clients) optc's fast
int8 dot kernel is ``vpmaddubsw`` + ``vpmaddwd`` (``optc.codegen.schedules.vnni.PMADDUBSW``,
32 multiply-adds per 3 instructions, oneDNN's AVX2 emulation of ``vpdpbusd``).
``vpmaddubsw`` sums two uint8 x int8 products into a saturating int16, which 8-bit codes
overflow (2 * 255 * 127 > 32767); 7-bit codes cannot (2 * 255 * 64 = 32640). So on those
targets the ``mixed-precision`` pass quantizes its int8 weights to [-63, 63] (oneDNN's
"scale adjust" of 0.5 for non-VNNI int8), the kernel is bit-exact, and the fidelity the
search measures is the deployed model's. Other targets keep 8-bit codes; code
generation picks the kernel from the codes of each constant, so any QDQ model (8-bit
codes included) still runs exactly, on ``vpmaddwd``.

The same targets run weights whose codes all lie in [-32, 32] on a faster kernel
(``vnni.PMADDUBSW_PAIRS``: two ``vpmaddubsw`` results added in int16 before one
``vpmaddwd``, exact for such codes): 6-bit codes, ``w6a8``, which the search may choose
for a layer where the fidelity allows it (``six_bit_kernel``, ``optc.quant.plan``).

The 16-bit rung's float type (``half_dtype``): bfloat16 where the code generator runs
bfloat16 contractions natively (x86 with AVX-512 BF16, ``vdpbf16ps``:
``optc.codegen.schedules.hw.has_bf16_dot``), float16 elsewhere. On x86 without float16
arithmetic (everything before AVX512-FP16) a float16 layer is widened to float32 and is
no faster than fp32, while a bfloat16 one on ``vdpbf16ps`` is (``optc.quant.latency``).
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from typing import Any

from optc.quant.latency import HalfDtype, cpu_flags, half_dtype_for_flags

INT8_CODE_BITS = 8
PMADDUBSW_CODE_BITS = 7
PAIRS_CODE_BITS = 6
_X86 = ("x86_64", "i386", "i686", "amd64")


def int8_code_bits(target: Any = None) -> int:
    """7 where ``target``'s int8 dot kernel is ``vpmaddubsw``, else 8.

    ``target``: an ``optc.target.Target`` (``ctx.target``), a TVM target dict, or None
    for this host. A TVM target that names no CPU (``{"kind": "llvm"}`` before the host
    calibration fills it in) is this host."""
    kernels = _dot_kernels(target)
    if kernels is None:
        return code_bits_for_flags(cpu_flags())
    if not kernels:  # off x86 or off LLVM: 8-bit codes, without importing TVM
        return INT8_CODE_BITS
    from optc.codegen.schedules.vnni import PMADDUBSW, VNNI

    return PMADDUBSW_CODE_BITS if PMADDUBSW in kernels and VNNI not in kernels \
        else INT8_CODE_BITS


def six_bit_kernel(target: Any = None) -> bool:
    """Whether ``target`` (as for ``int8_code_bits``) runs 6-bit weight codes faster than
    its 8-bit ones: where its int8 kernel is ``vpmaddubsw``, which ``vpmaddubsw`` on
    pairs of K-groups (``vnni.PMADDUBSW_PAIRS``) comes with (``vnni_pack.dot_kernels``)."""
    return int8_code_bits(target) == PMADDUBSW_CODE_BITS


def float_depthwise(target: Any = None) -> bool:
    """Whether ``optc.codegen`` computes ``target``'s (as for ``int8_code_bits``) int8
    depthwise convs on float32 vectors (``quantized._exact_float_depthwise``): on x86 with
    AVX2. There an int8 depthwise conv is no faster than its fp32 form and only less
    accurate (EfficientNet-Lite0 all-w8a8 on a Zen 4, its 16 depthwise convs fp32
    instead: 0.999x the time, paired, logit cosine 0.9929 -> 0.9954), so the
    ``mixed-precision`` search leaves them fp32 (``plan.Options.int8_depthwise``).
    Where it has packed int8 dot kernels (x86 with AVX2), ``optc.codegen.quantized``
    computes depthwise convs and stems in float32."""
    kernels = _dot_kernels(target)
    return "avx2" in cpu_flags() if kernels is None else bool(kernels)


def half_dtype(target: Any = None) -> HalfDtype:
    """The float type of the ``mixed-precision`` pass's 16-bit layers on ``target`` (as
    for ``int8_code_bits``): "bfloat16" where optc's code generator runs bfloat16
    contractions on ``vdpbf16ps`` (``hw.has_bf16_dot``), else "float16". This host is
    decided from its CPU flags (``half_dtype_for_flags``), without importing TVM."""
    llvm = _llvm_target(target)
    if llvm is _HOST:
        return half_dtype_for_flags(cpu_flags())
    if llvm is None:
        return "float16"
    # The code generator's own test (this imports TVM, which a compile for it needs).
    from optc.codegen.schedules.hw import has_bf16_dot

    return "bfloat16" if has_bf16_dot(llvm) else "float16"


def _dot_kernels(target: Any) -> tuple[Any, ...] | None:
    """The packed int8 kernels the code generator has for ``target`` (as for
    ``int8_code_bits``; ``vnni_pack.dot_kernels``: none off x86 or off LLVM), or None
    where ``target`` is this host, decided from its CPU flags."""
    llvm = _llvm_target(target)
    if llvm is _HOST:
        return None
    if llvm is None:
        return ()
    # The kernel choice is the code generator's: ask it.
    from optc.codegen.schedules.vnni_pack import dot_kernels

    return dot_kernels(llvm)


_HOST = object()
"""``_llvm_target``'s answer for this host (a target naming no CPU)."""


def _llvm_target(target: Any) -> Any:
    """``target`` (as for ``int8_code_bits``) as a ``tvm.target.Target`` when it is an
    x86 LLVM target naming its CPU (this imports TVM, which a compile for it needs
    anyway); ``_HOST`` for this host (no target, or ``{"kind": "llvm"}`` before the host
    calibration fills it in); None for any other target (not LLVM, or LLVM for another
    architecture), without importing TVM."""
    tvm_target = _tvm_target_dict(target)
    if tvm_target is None or not ({"mcpu", "mattr", "mtriple"} & set(tvm_target)):
        if tvm_target is not None and tvm_target.get("kind") != "llvm":
            return None
        return _HOST
    if tvm_target.get("kind") != "llvm":
        return None
    arch = str(tvm_target.get("mtriple", "x86_64")).split("-", 1)[0].lower()
    if arch not in _X86:
        return None
    import tvm

    return tvm.target.Target(dict(tvm_target))


def code_bits_for_flags(flags: Collection[str]) -> int:
    """The same decision from ``/proc/cpuinfo`` flags: AVX2 without AVX-512 VNNI (the
    256-bit AVX-VNNI of Alder Lake is not used by optc) -> 7."""
    return PMADDUBSW_CODE_BITS if "avx2" in flags and "avx512_vnni" not in flags \
        else INT8_CODE_BITS


def _tvm_target_dict(target: Any) -> Mapping[str, Any] | None:
    if target is None:
        return None
    if isinstance(target, Mapping):
        return target
    found = getattr(target, "tvm_target_dict", None)
    if isinstance(found, Mapping):
        return found
    text = getattr(target, "tvm_target_json", None)
    return json.loads(text) if isinstance(text, str) else None
