"""A MetaSchedule builder that keeps its worker processes, and the function they run.

MetaSchedule's ``LocalBuilder`` starts a new process pool for every batch, and its
``default_build`` imports ``tvm.s_tir.tensor_intrin``, which parses ~500 TVMScript
intrinsics: every batch paid ~5 s of TVM import and ~29 s of parsing on a 2-core VM
before building anything. optc's design space (``space.py``) uses no tensor
intrinsics, so ``build_candidate`` skips that import, and ``PersistentBuilder`` keeps
its workers from batch to batch. A worker is still a separate process: a candidate that
crashes LLVM or hangs past the timeout costs that worker (restarted on the next
submit), not the tuner.
"""

from __future__ import annotations

import contextlib
import inspect
import linecache
import os
import sys
import tempfile
from collections.abc import Iterator

import tvm
from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms
from tvm.support.popen_pool import PopenPoolExecutor, StatusKind


@contextlib.contextmanager
def _cheap_inspect_stack() -> Iterator[None]:
    """``inspect.stack`` without its module lookup, for the duration of an import.

    TVMScript's ``prim_func`` decorator calls ``inspect.stack()``, and each frame's
    ``inspect.getmodule`` walks every module in ``sys.modules`` to find its file: with
    torch and onnx loaded that is ~0.4 s per intrinsic, minutes for the ~500 of
    ``tvm.s_tir.tensor_intrin``. The frame, file, line and source line read from the
    frame object itself are what the decorator uses.
    """
    original = inspect.stack

    def stack(context: int = 1) -> list[inspect.FrameInfo]:
        frames = []
        frame = sys._getframe(1)
        while frame is not None:
            name, lineno = frame.f_code.co_filename, frame.f_lineno
            line = linecache.getline(name, lineno) if context > 0 else ""
            frames.append(
                inspect.FrameInfo(
                    frame,
                    name,
                    lineno,
                    frame.f_code.co_name,
                    [line] if line else None,
                    0 if line else None,
                )
            )
            frame = frame.f_back
        return frames

    inspect.stack = stack
    try:
        yield
    finally:
        inspect.stack = original


def preload_tensor_intrin() -> None:
    """Import ``tvm.s_tir.tensor_intrin`` quickly; MetaSchedule's ``TuneContext`` imports
    it on construction (once per process), which would otherwise take minutes here."""
    if "tvm.s_tir.tensor_intrin" in sys.modules:
        return
    with _cheap_inspect_stack():
        import tvm.s_tir.tensor_intrin  # noqa: F401


def build_candidate(mod: tvm.IRModule, target: tvm.target.Target) -> str:
    """Compile one candidate and export it as MetaSchedule's runner expects (a tar of
    object files); the path of the artifact. Runs in a builder worker, which imports
    this module by reference."""
    from tvm.driver import build
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock
    from tvm.support.tar import tar

    mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod)
    built = build(mod, target=target)
    path = os.path.join(tempfile.mkdtemp(prefix="optc-ms-"), "candidate." + tar.output_format)
    built.export_library(path, fcompile=tar)
    return path


@derived_object
class PersistentBuilder(ms.builder.PyBuilder):
    """Builds candidates in ``max_workers`` long-lived worker processes."""

    def __init__(self, max_workers: int, timeout_sec: float) -> None:
        super().__init__()
        self.timeout_sec = timeout_sec
        self.pool = PopenPoolExecutor(max_workers=max_workers, timeout=timeout_sec)

    def build(self, build_inputs: list[ms.builder.BuilderInput]) -> list[ms.builder.BuilderResult]:
        results = []
        jobs = [(build_candidate, i.mod, i.target) for i in build_inputs]
        for done in self.pool.map_with_error_catching(_call, jobs):
            if done.status == StatusKind.COMPLETE:
                results.append(ms.builder.BuilderResult(done.value, None))
            elif done.status == StatusKind.TIMEOUT:
                message = f"optc builder: timeout after {self.timeout_sec} s"
                results.append(ms.builder.BuilderResult(None, message))
            else:
                message = f"optc builder: {done.value}"
                results.append(ms.builder.BuilderResult(None, message))
        return results

    def shutdown(self) -> None:
        self.pool.shutdown()


def _call(job: tuple) -> str:
    func, *args = job
    return func(*args)
