"""optc's default CPU schedules for TVM 0.27 (``llvm`` targets).

TVM 0.27's default Relax pipeline for CPUs legalizes and fuses but schedules nothing, so
every kernel is a scalar, serial loop nest. This package supplies:

- a graph-level preparation (``prepare_cpu``): inference clean-ups, channels-last
  (NHWC/HWIO) layout for 2-D convolutions with constant weights re-packed at compile time
  into contiguous output-channel panels (``conv_pack.py``: a tile reads one panel, not
  rows a whole channel count apart that collide in the cache),
  vectorizable ``exp``/``erf``/``softmax`` (``prep.py``, ``lift.py``, ``fastmath.py``);
- schedule rules over the legalized, fused TIR (``apply_cpu_schedules``): a register-
  blocked, vectorized, parallel contraction schedule for conv2d / matmul / dense /
  batch_matmul with their elementwise epilogues (``contraction.py``), vectorized pooling
  and spatial reductions (``reduction.py``), a row rule for softmax / layer norm / mean
  that runs each row's stages under one loop with reductions on SIMD partial sums, single
  rows included (``rowreduce.py``, ``rfactor.py``), and an injective fallback that
  parallelizes and vectorizes the rest (``loops.py``); uint8 x int8 -> int32
  contractions are vectorized like float ones (int32 lanes), and matmuls / 1x1
  convolutions on uint8 activations use AVX-512 VNNI ``vpdpbusd`` on weights packed at
  compile time where the target has it, AVX2 ``vpmaddwd`` on int8 weights widened as
  they load elsewhere (and for widths that are multiples of 8 but not 16)
  (``vnni_pack.py``, ``vnni.py``); functions no rule understands are left as TVM
  generates them;
- ``cpu_pipeline(target)``: the whole Relax pipeline with both of the above, for
  ``tvm.compile(mod, target, relax_pipeline=cpu_pipeline(target))``;
- ``tune(mod, target, trials, work_dir)``: MetaSchedule on top, with a JSON database in
  ``work_dir`` that later compiles pick up (``tune.py``). Its design space is optc's own
  contraction rule with the register tile, loop order and parallel-or-serial as sampled
  decisions (``space.py``), seeded with the measured untuned schedule; a search winner
  replaces the untuned schedule only if it is still >= 3 % faster when both are measured
  again, alternately, at the end (one noisy measurement had kept slower kernels);
  candidates are built by two persistent workers that never
  import TVM's tensor-intrinsic library (``measure.py``: that import alone took 29 s per
  worker and batch).

How ``optc.codegen.build`` uses it (its ``relax_pipeline`` hooks)::

    from optc.codegen.schedules import apply_cpu_schedules, prepare_cpu

    if target.kind.name == "llvm":
        executable = tvm.compile(mod, target=target, relax_pipeline=relax_pipeline(
            target, prepare=prepare_cpu, schedule=apply_cpu_schedules, fuse=True))

The schedules need fused functions (``fuse=True``): an epilogue is scheduled inside its
producer's tile. Tuned records: build inside ``with tune(...):`` (or ``with
open_database(work_dir):``); ``apply_cpu_schedules`` applies the current MetaSchedule
database first and schedules only what it has no record for.
"""

from optc.codegen.schedules.apply import apply_cpu_schedules
from optc.codegen.schedules.pipeline import cpu_pipeline, prepare_cpu
from optc.codegen.schedules.tune import open_database, tune

__all__ = ["apply_cpu_schedules", "cpu_pipeline", "open_database", "prepare_cpu", "tune"]
