"""``--tune N``: MetaSchedule tuning with a database cached on disk and reused.

The database lives in ``<cache dir>/tuning/<digest of the TVM target>``: tuned
schedules depend on the code generator's target (CPU model, features, cores), not on
the roofline figures, so re-measuring the host keeps them. Functions already in the
database are not tuned again, so a second compile of the same model is cheap.

The tuner (``optc.codegen.schedules.tune``) runs in a child process: MetaSchedule is
native code that can crash the interpreter, and a crash must end as one error line,
not take ``optc compile`` down. The build then runs inside ``with database:``, where
optc's CPU schedules pick the tuned records up.

The child also builds and times the whole model, untuned and with the search's winners,
before it commits anything (``schedules/tune_verify.py``: a kernel faster alone need not
be faster between the model's other kernels). It imports ``optc.codegen`` first, so that
this timing runs on a TVM thread pool sized as the compiled model's will be (one thread
per core; TVM's own default is half the logical cores on x86, one thread on a 2-vCPU VM).
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import logging
import multiprocessing
import time
from collections.abc import Mapping
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from optc.errors import EXIT_BAD_INPUT, OptcError, UserInputError
from optc.ir.graph import Graph
from optc.settings import read_settings

log = logging.getLogger(__name__)

TUNING_DIR = "tuning"


def tuning_dir(tvm_target: Mapping[str, Any], cache_dir: Path | None = None) -> Path:
    """The database folder for ``tvm_target`` under the cache (``optc.settings``)."""
    text = json.dumps(dict(tvm_target), sort_keys=True)
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    return (cache_dir or read_settings().cache_dir) / TUNING_DIR / digest


def check_tunable(tvm_target: Mapping[str, Any], trials: int) -> None:
    """Refuse what the tuner cannot do before anything is built."""
    from optc.codegen.host_cpu import machine_arch, triple_arch

    if trials < 1:
        raise UserInputError(f"--tune needs at least 1 trial, got {trials}")
    try:
        from optc.codegen.schedules import tune as _  # noqa: F401
    except ImportError as exc:
        raise UserInputError(
            "--tune is not available yet: optc's CPU schedules "
            "(optc.codegen.schedules.tune) are not installed"
        ) from exc
    if tvm_target.get("kind") != "llvm":
        raise UserInputError(
            f"--tune is for CPU targets only (this target's TVM kind is {tvm_target.get('kind')!r})"
        )
    arch = triple_arch(str(tvm_target.get("mtriple") or machine_arch()))
    if arch != machine_arch():
        raise UserInputError(
            f"--tune times candidates on this machine, and the target's code "
            f"is for {arch}, not {machine_arch()}"
        )


def tune(
    graph: Graph,
    tvm_target: Mapping[str, Any],
    trials: int,
    scratch: Path,
    cache_dir: Path | None = None,
) -> dict[str, Any]:
    """Tune ``graph``'s functions for ``tvm_target``; the report's ``tuning`` record."""
    from optc.frontend import save_onnx

    check_tunable(tvm_target, trials)
    work_dir = tuning_dir(tvm_target, cache_dir)
    model = scratch / "tune-input.onnx"
    save_onnx(graph, model)
    started = time.perf_counter()
    context = multiprocessing.get_context("spawn")  # never fork a process holding TVM
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
        try:
            records, error, code = pool.submit(
                _tune_in_child, str(model), dict(tvm_target), trials, str(work_dir)
            ).result()
        except BrokenProcessPool as exc:
            raise OptcError(
                "MetaSchedule tuning crashed (the tuner process died; see the "
                f"logs in {work_dir / 'logs'}); compile without --tune"
            ) from exc
    if error is not None:
        raise UserInputError(error) if code == EXIT_BAD_INPUT else OptcError(error)
    seconds = time.perf_counter() - started
    log.info("tuning: %d records in %s after %.1f s", records, work_dir, seconds)
    return {"trials": trials, "database": str(work_dir), "records": records}


def _tune_in_child(
    model: str, tvm_target: dict[str, Any], trials: int, work_dir: str
) -> tuple[int, str | None, int]:
    """``(records in the database, error message or None, exit code)``, in the child."""
    from optc.codegen.build import make_target
    from optc.codegen.importer import import_graph, input_specs
    from optc.codegen.schedules.tune import tune as tune_module
    from optc.frontend import load_onnx

    try:
        graph = load_onnx(model)
        module = import_graph(graph, input_specs(graph, None))
        database = tune_module(module, make_target(tvm_target), trials, work_dir)
        return len(database), None, 0
    except OptcError as exc:  # travels back as text: OptcError subclasses need not pickle
        return 0, str(exc), int(exc.exit_code)


def open_database(work_dir: str | Path) -> Any:
    """The tuning database in ``work_dir``, for ``with database:`` around the build."""
    from optc.codegen.schedules.tune import open_database as open_json_database

    return open_json_database(work_dir)
