"""MetaSchedule design space made of optc's own contraction schedule with knobs.

MetaSchedule's default space, searched from scratch, does not beat ``contraction.py``
within the few trials a 2-core machine affords. This space is optc's schedule itself,
with its choices exposed to the search:

- the register tile, rows x vectors, as two ``sample_categorical`` decisions whose
  default is ``choose_tile``'s pick (random re-sampling explores the rest);
- structural variants, one design space each: the loop order of the tile loops (weight
  panel reused by every row block, optc's default, or a row block reused by every weight
  panel), for serial kernels up to ``_PARALLEL_BAND`` times below ``PARALLEL_MIN_MACS``
  a parallel one, and for kernels that zero-pad their input the padded rows made inside
  each tile or a padded copy of the whole input made before the kernel
  (``Knobs.pad_in_tile``).

Only that direction: a serial variant of a parallel kernel is a decision that holds only
under the load it was measured in. On a busy machine a parallel kernel waits for a
preempted thread, so serial can win; on free cores it runs on half of them. Measured on
the 2-core Zen 3 (shared, load 4-7): ShuffleNet's biggest conv (4.3 M multiply-adds, 7
calls), tuned to serial, took 0.38x its parallel schedule's time inside the model at one
moment (whole model 0.73x), 1.23x twenty minutes later with the same two builds (whole
model 1.13x), 0.97-1.01x a minute after that; unchanged kernels varied by up to 20 %
meanwhile. A parallel variant that wins under load wins on free cores by more, so that
one stays.

Design space 0 with its default decisions is exactly the untuned schedule, so the
tuner can seed the database with it (``tune.py``). Functions that are not float
contractions are not part of any space: optc's deterministic rules schedule them.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import tvm
from tvm import s_tir, tirx
from tvm.s_tir import meta_schedule as ms
from tvm.s_tir.dlight.analysis import normalize_prim_func

from .analysis import as_contraction
from .apply import float_reduction, is_pad, schedule_contraction_with
from .contraction import _MAX_ACC_FRACTION, _MAX_ROWS, PARALLEL_MIN_MACS, Factor, Knobs, Tile
from .depthwise import as_depthwise
from .hw import CpuInfo, cpu_info
from .measure import preload_tensor_intrin

# Row tiles the search may pick (besides the default); beyond 16 code size only grows.
_ROW_CHOICES = (1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14, 16)
# Offer the parallel variant of a serial kernel above PARALLEL_MIN_MACS / this: below the
# threshold either may win (never the serial variant of a parallel one: module docstring).
_PARALLEL_BAND = 8


def _categorical(sch: s_tir.Schedule, choices: list[int], default: int) -> Factor:
    if len(choices) == 1:
        return default
    return sch.sample_categorical(
        candidates=choices,
        probs=[1.0 / len(choices)] * len(choices),
        decision=choices.index(default),
    )


def _vector_choices(tile: Tile, cols: int, cpu: CpuInfo) -> list[int]:
    """Vector counts whose tile width divides ``cols`` and fits the accumulator budget."""
    budget = int(cpu.registers * _MAX_ACC_FRACTION)
    width = cols // tile.lanes
    found = [v for v in range(1, budget + 1) if width % v == 0]
    return sorted({*found, tile.vectors})


def sampled_factors(
    cpu: CpuInfo,
) -> Callable[[s_tir.Schedule, Tile, int, int], tuple[Factor, Factor]]:
    """``Knobs.factors``: the tile as sampled decisions defaulting to ``tile``."""

    def factors(sch: s_tir.Schedule, tile: Tile, rows: int, cols: int) -> tuple[Factor, Factor]:
        row_choices = sorted({r for r in _ROW_CHOICES if r <= min(rows, _MAX_ROWS)} | {tile.rows})
        n_rows = _categorical(sch, row_choices, tile.rows) if rows > 1 else tile.rows
        n_vectors = _categorical(sch, _vector_choices(tile, cols, cpu), tile.vectors)
        return n_rows, n_vectors

    return factors


def contraction_macs(func: tirx.PrimFunc) -> int | None:
    """Multiply-adds of ``func``'s single contraction, None if it has none, if it is an
    integer kernel for ``vnni.py`` or a depthwise conv for ``depthwise.py`` (not part of
    this space: a tuned contraction schedule from the database would replace the
    depthwise rule's, which took 0.32-0.78x the contraction schedule's time)."""
    sch = s_tir.Schedule(func)
    infos = normalize_prim_func(sch)
    reduction = None if infos is None else float_reduction(sch, infos)
    if reduction is None or as_depthwise(sch, reduction) is not None:
        return None
    con = as_contraction(sch, reduction)
    if con is None or not all(isinstance(it.dom, (int, tirx.IntImm)) for it in con.info.iters):
        return None
    return math.prod(int(it.dom) for it in con.info.iters)


def has_pad(func: tirx.PrimFunc) -> bool:
    """Whether ``func`` zero-pads an input before its contraction (``apply.is_pad``)."""
    sch = s_tir.Schedule(func)
    infos = normalize_prim_func(sch)
    return infos is not None and any(is_pad(sch, info) for info in infos)


def variants(macs: int, cpu: CpuInfo, pad: bool = False) -> list[Knobs]:
    """The structural variants for a contraction of ``macs`` multiply-adds; the first one
    is optc's default structure. With a ``pad`` producer, the padded input made inside the
    tile and before the kernel are two more (one of them the default's choice: the rule
    is per kernel, ``contraction.pad_in_tile_default``)."""
    default_parallel = macs >= PARALLEL_MIN_MACS
    parallel = [default_parallel]
    if cpu.cores > 1 and PARALLEL_MIN_MACS // _PARALLEL_BAND <= macs < PARALLEL_MIN_MACS:
        parallel.append(True)
    factors = sampled_factors(cpu)
    found = [
        Knobs(factors=factors, parallel=p, rows_outside=order)
        for order, p in itertools.product((False, True), parallel)
    ]
    if pad:
        found += [
            Knobs(factors=factors, parallel=default_parallel, pad_in_tile=t) for t in (True, False)
        ]
    return found


def contraction_space(target: tvm.target.Target) -> ms.space_generator.ScheduleFn:
    """The design space generator for ``target``'s float contractions."""
    preload_tensor_intrin()  # every TuneContext imports it: fast this way
    cpu = cpu_info(target)

    def generate(sch: s_tir.Schedule) -> list[s_tir.Schedule]:
        macs = contraction_macs(sch.mod["main"])
        if macs is None:
            return [sch]
        spaces = []
        for knobs in variants(macs, cpu, has_pad(sch.mod["main"])):
            copy = sch.copy()
            if schedule_contraction_with(copy, cpu, knobs):
                spaces.append(copy)
        return spaces or [sch]

    return ms.space_generator.ScheduleFn(generate, sch_rules=[], postprocs=[], mutator_probs={})
