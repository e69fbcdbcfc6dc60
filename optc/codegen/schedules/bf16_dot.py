"""``vdpbf16ps`` (AVX-512 BF16) as a tensor intrinsic: bfloat16 contractions, fp32 sums.

One ``vdpbf16ps`` multiplies 32 bfloat16 pairs and adds each pair's two products to one
of 16 float32 accumulators: 32 multiply-adds per instruction where a float32 FMA does 16,
on operands half the bytes. optc packs a bfloat16 weight ``W[K, N]`` as ``Wp[N/16, K/2,
16, 2]`` (``vnni_pack.pack_weight``, the layout of the int8 VNNI kernel with pairs instead
of quads) and broadcasts two consecutive activations as one 32-bit word, so the loop nest
of ``vnni.schedule_vnni`` runs it unchanged (``vnni.BF16``).

Why an LLVM IR wrapper: LLVM 22 declares the intrinsic on ``<32 x bfloat>`` operands,
which TVM 0.27 cannot produce. Its bfloat16 legalization widens bfloat16 vectors to
float32 before code generation (the call then fails LLVM's verifier on ``<32 x float>``);
``<32 x i16>`` operands fail it too, and disabling the legalization crashes the build.
``WRAPPER_IR`` takes ``<32 x i16>``, bitcasts (free) and calls the intrinsic; it is
linked into the kernel's LLVM module through the ``pragma_import_llvm`` loop annotation
(``vnni.schedule_vnni``) and, being ``alwaysinline``, compiles to the one instruction.
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
INTRIN = "optc_dot_16x2_bf16_local"
# The same instruction on activations held as their bits (uint16): a padded copy made
# inside the kernel (``vnni_pack.packed_conv``) must be, because TVM's bfloat16
# legalization turns a bfloat16 buffer allocated in a kernel into a float32 one, whose
# pairs are no longer one 32-bit word (LLVM then refuses the bitcast).
BITS_INTRIN = "optc_dot_16x2_bf16_bits_local"
WRAPPER = "optc_vdpbf16ps_512"

WRAPPER_IR = f"""
declare <16 x float> @llvm.x86.avx512bf16.dpbf16ps.512(<16 x float>, <32 x bfloat>, <32 x bfloat>)

define internal <16 x float> @{WRAPPER}(<16 x float> %acc, <32 x i16> %a, <32 x i16> %b) \
alwaysinline {{
  %ab = bitcast <32 x i16> %a to <32 x bfloat>
  %bb = bitcast <32 x i16> %b to <32 x bfloat>
  %r = call <16 x float> @llvm.x86.avx512bf16.dpbf16ps.512(<16 x float> %acc, \
<32 x bfloat> %ab, <32 x bfloat> %bb)
  ret <16 x float> %r
}}
"""
"""The wrapper's LLVM IR: ``<32 x i16>`` operands bitcast to ``<32 x bfloat>``."""


def _value(x: tirx.PrimExpr, bits: bool) -> tirx.PrimExpr:
    """An activation element as float32: from bfloat16, or from its bits (uint16)."""
    return T.cast(T.reinterpret(x, dtype="bfloat16") if bits else x, "float32")


def dot_desc(act_dtype: str = "bfloat16") -> tirx.PrimFunc:
    """What the kernel computes, for tensorize to match: 16 float32 accumulators, each
    adding two bfloat16 x bfloat16 products (``c[i] += f32(a[k]) * f32(b[i, k])``, the
    form Relax legalizes ``matmul(bf16, bf16, out_dtype="float32")`` to); ``act_dtype``
    "uint16": ``a`` holds the activations' bits."""
    bits = act_dtype == "uint16"

    @T.prim_func(s_tir=True)
    def desc(
        a: T.Buffer((PAIR,), act_dtype, offset_factor=1),
        b: T.Buffer((LANES, PAIR), "bfloat16", offset_factor=1),
        c: T.Buffer((LANES,), "float32", offset_factor=1, scope="local"),
    ) -> None:
        with T.sblock("root"):
            T.reads(c[0:LANES], a[0:PAIR], b[0:LANES, 0:PAIR])
            T.writes(c[0:LANES])
            for i in T.serial(0, LANES):
                for k in T.serial(0, PAIR):
                    with T.sblock("update"):
                        vi, vk = T.axis.remap("SR", [i, k])
                        c[vi] = c[vi] + _value(a[vk], bits) * T.cast(b[vi, vk], "float32")

    return desc


def dot_impl(act_dtype: str = "bfloat16") -> tirx.PrimFunc:
    """``vdpbf16ps`` through ``WRAPPER``: the activation pair broadcast as one 32-bit word
    (``vpbroadcastd``), the 16 x 2 weight tile loaded as one zmm. The bfloat16 loads are
    reinterpreted as unsigned 16-bit vectors, a form TVM's bfloat16 legalization keeps
    (it widens bfloat16 arithmetic, not bit casts)."""
    pair = f"{act_dtype}x{PAIR}"

    @T.prim_func(s_tir=True)
    def impl(
        a: T.Buffer((PAIR,), act_dtype, offset_factor=1),
        b: T.Buffer((LANES, PAIR), "bfloat16", offset_factor=1),
        c: T.Buffer((LANES,), "float32", offset_factor=1, scope="local"),
    ) -> None:
        with T.sblock("root"):
            T.reads(c[0:LANES], a[0:PAIR], b[0:LANES, 0:PAIR])
            T.writes(c[0:LANES])
            c[T.ramp(T.int32(0), 1, LANES)] = T.call_pure_extern(
                "float32x16",
                WRAPPER,
                c.vload([0], dtype="float32x16"),
                T.reinterpret(
                    T.broadcast(
                        T.reinterpret(a.vload([0], pair), dtype="uint32"), LANES
                    ),
                    dtype="uint16x32",
                ),
                T.reinterpret(b.vload([0, 0], dtype="bfloat16x32"), dtype="uint16x32"),
            )

    return impl
