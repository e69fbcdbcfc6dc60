"""``vdpbf16ps`` (AVX-512 BF16) as a tensor intrinsic: bfloat16 contractions, fp32 sums.

One ``vdpbf16ps`` multiplies 32 bfloat16 pairs and adds each pair's two products to one
of 16 float32 accumulators: 32 multiply-adds per instruction where a float32 FMA does 16,
on operands half the bytes. optc packs a bfloat16 weight ``W[K, N]`` as ``Wp[N/16, K/2,
16, 2]`` (``vnni_pack.pack_weight``, the layout of the int8 VNNI kernel with pairs instead
of quads) and broadcasts two consecutive activations as one 32-bit word, so the loop nest
of ``vnni.schedule_vnni`` runs it unchanged (``vnni.BF16``; the description tensorize
matches is ``vnni._dot_desc`` with bfloat16 operands and float32 sums; this module holds
the implementation).

Why an LLVM IR wrapper: LLVM 22 declares the intrinsic on ``<32 x bfloat>`` operands,
which TVM 0.27 cannot produce. Its bfloat16 legalization widens bfloat16 vectors to
float32 before code generation (the call then fails LLVM's verifier on ``<32 x float>``);
``<32 x i16>`` operands fail it too, and disabling the legalization crashes the build.
``WRAPPER_IR`` (per width: zmm, 16 outputs, and ymm, 8, for output widths that are a
multiple of 8 but not of 16) takes ``<2n x i16>``, bitcasts (free) and calls the
intrinsic; it is linked into the kernel's LLVM module through the ``pragma_import_llvm``
loop annotation (``vnni.schedule_vnni``) and, being ``alwaysinline``, compiles to the
one instruction.
(docs/design/bf16-dot-kernels.md has the spike that found this path.)

``vdpbf16ps`` ignores MXCSR: it rounds its sums to nearest even and treats bfloat16
denormal inputs and outputs as zero (Intel SDM); optc's bfloat16 weights and
activations come from float32 values rounded to nearest even, as the reference
interpreter computes them.
"""

from __future__ import annotations

from tvm import tirx
from tvm.script import tirx as T

LANES, PAIR = 16, 2  # float32 accumulators per zmm register; bfloat16 products per lane
YMM_LANES = 8  # the 256-bit form (AVX-512 VL): output widths a multiple of 8, not of 16


def intrin_name(lanes: int, bits: bool = False) -> str:
    """The tensor intrinsic of ``lanes`` accumulators; ``bits``: on activations held as
    their bits (uint16). A padded copy made inside the kernel (``vnni_pack.packed_conv``)
    must be, because TVM's bfloat16 legalization turns a bfloat16 buffer allocated in a
    kernel into a float32 one, whose pairs are no longer one 32-bit word (LLVM then
    refuses the bitcast)."""
    return f"optc_dot_{lanes}x2_bf16{'_bits' if bits else ''}_local"


def wrapper_name(lanes: int) -> str:
    return f"optc_vdpbf16ps_{32 * lanes}"


def _wrapper(lanes: int) -> str:
    """LLVM IR of the wrapper for ``lanes`` accumulators: ``<2 lanes x i16>`` operands
    bitcast to ``<2 lanes x bfloat>``."""
    acc, pairs = f"<{lanes} x float>", f"<{2 * lanes} x bfloat>"
    bits, intrinsic = f"<{2 * lanes} x i16>", f"llvm.x86.avx512bf16.dpbf16ps.{32 * lanes}"
    return f"""
declare {acc} @{intrinsic}({acc}, {pairs}, {pairs})

define internal {acc} @{wrapper_name(lanes)}({acc} %acc, {bits} %a, {bits} %b) alwaysinline {{
  %ab = bitcast {bits} %a to {pairs}
  %bb = bitcast {bits} %b to {pairs}
  %r = call {acc} @{intrinsic}({acc} %acc, {pairs} %ab, {pairs} %bb)
  ret {acc} %r
}}
"""


WRAPPER_IR = {lanes: _wrapper(lanes) for lanes in (LANES, YMM_LANES)}
"""Lanes -> the LLVM IR of that width's wrapper."""


def dot_impl(act_dtype: str = "bfloat16", lanes: int = LANES) -> tirx.PrimFunc:
    """``vdpbf16ps`` through ``wrapper_name(lanes)``: the activation pair broadcast as
    one 32-bit word (``vpbroadcastd``), the ``lanes`` x 2 weight tile loaded as one
    register. The bfloat16 loads are reinterpreted as unsigned 16-bit vectors, a form
    TVM's bfloat16 legalization keeps (it widens bfloat16 arithmetic, not bit casts)."""
    pair = f"{act_dtype}x{PAIR}"
    acc, operand = f"float32x{lanes}", f"uint16x{2 * lanes}"

    @T.prim_func(s_tir=True)
    def impl(
        a: T.Buffer((PAIR,), act_dtype, offset_factor=1),
        b: T.Buffer((lanes, PAIR), "bfloat16", offset_factor=1),
        c: T.Buffer((lanes,), "float32", offset_factor=1, scope="local"),
    ) -> None:
        with T.sblock("root"):
            T.reads(c[0:lanes], a[0:PAIR], b[0:lanes, 0:PAIR])
            T.writes(c[0:lanes])
            c[T.ramp(T.int32(0), 1, lanes)] = T.call_pure_extern(
                acc,
                wrapper_name(lanes),
                c.vload([0], dtype=acc),
                T.reinterpret(
                    T.broadcast(T.reinterpret(a.vload([0], pair), dtype="uint32"), lanes),
                    dtype=operand,
                ),
                T.reinterpret(b.vload([0, 0], dtype=f"bfloat16x{2 * lanes}"), dtype=operand),
            )

    return impl
