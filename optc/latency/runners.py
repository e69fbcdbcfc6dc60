"""How each kind of device runs a graph: TVM (local and RPC), onnxruntime, eager torch.

The helpers here prepare a callable (or a compiled module) once per graph so that
only execution is timed, never compilation, session creation or Python set-up.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from optc.compiler.rpc import RpcTracker
from optc.errors import UserInputError
from optc.ir import Graph

log = logging.getLogger(__name__)


def feeds_for(graph: Graph) -> dict[str, np.ndarray]:
    """Deterministic inputs: a ramp in [0, 1) for floats, zeros otherwise (valid token ids
    and masks), like ``optc.codegen.signature.example_feeds``."""
    feeds = {}
    for value in graph.inputs:
        if value.shape is None or not all(isinstance(d, int) for d in value.shape):
            raise UserInputError(f"input {value.name!r} of {graph.name!r} has no static shape "
                                 f"({value.shape}); latency needs fixed shapes")
        shape = tuple(int(d) for d in value.shape)  # type: ignore[arg-type]
        dtype = np.dtype(value.dtype or "float32")
        size = int(np.prod(shape))
        feeds[value.name] = ((np.arange(size).reshape(shape) / max(size, 1)).astype(dtype)
                             if dtype.kind == "f" else np.zeros(shape, dtype))
    return feeds


class TvmBuilds:
    """The TVM build of the last graph asked for, shared by the TVM devices of one run.

    TVM's CPU thread pool is configured once, at first use, from environment variables,
    so they are set here, before any TVM module runs (a value the user set is kept):

    - ``TVM_NUM_THREADS``: the pool's size. Without it TVM takes half the logical cores
      on x86 (one thread on a 2-core machine), and ``runtime.config_threadpool`` can
      only lower the count; every timing checks TVM reports the count asked for.
    - ``TVM_BIND_THREADS=0``, ``TVM_THREAD_POOL_SPIN_COUNT=0``: no pinning to cores and
      no spin-waiting, like onnxruntime's ``allow_spinning=0``. On a shared machine a
      pinned or spinning two-thread pool waits for a busy core: measured here under
      load, a 0.9 ms model took 25-190 ms on two threads; unpinned, 1.0 ms.
    """

    def __init__(self) -> None:
        from optc.codegen.host_cpu import available_cores

        os.environ.setdefault("TVM_NUM_THREADS", str(available_cores()))
        os.environ.setdefault("TVM_BIND_THREADS", "0")
        os.environ.setdefault("TVM_THREAD_POOL_SPIN_COUNT", "0")
        self._key: str | None = None
        self._vm: Any = None

    def get(self, graph: Graph) -> Any:
        """A Relax VM of ``graph`` built for this CPU (compiled once per graph)."""
        import tvm
        from tvm import relax

        from optc.codegen import build, host_target

        key = graph.structural_hash()
        if key != self._key:
            self._vm, self._key = None, None  # drop the old module before building anew
            built = build(graph, host_target())
            self._vm, self._key = relax.VirtualMachine(built.executable, tvm.cpu(0)), key
        return self._vm


def set_tvm_threads(threads: int) -> None:
    """Use ``threads`` worker threads from now on; fails if TVM cannot give that many."""
    import tvm

    tvm.get_global_func("runtime.config_threadpool")(1, threads)
    actual = int(tvm.get_global_func("runtime.NumThreads")())
    if actual != threads:
        raise UserInputError(f"TVM runs {actual} threads, not {threads}: its thread pool was "
                             "created before optc set TVM_NUM_THREADS (set it in the "
                             "environment, or measure in a fresh process)")


def time_tvm(vm: Any, feeds: Mapping[str, np.ndarray], threads: int, runs: int) -> list[float]:
    """Per-run seconds of the VM's ``main`` (timed in C++ by ``time_evaluator``, which
    discards one call of its own first)."""
    import tvm

    from optc.codegen.measure import time_vm

    set_tvm_threads(threads)
    device = tvm.cpu(0)
    args = [tvm.runtime.tensor(np.ascontiguousarray(a), device) for a in feeds.values()]
    timing = time_vm(vm, device, args, warmup=1, repeat=runs, number=1,
                     where=f"local cpu, {threads} threads")
    return list(timing.samples_s)


def time_calls(call: Callable[[], Any], runs: int) -> list[float]:
    """Seconds of each of ``runs`` calls of ``call``."""
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return samples


class OrtRunner:
    """onnxruntime sessions on the CPU, ``threads`` intra-op threads, no spin-waiting
    (a spinning idle thread would steal the core a one-thread device should not use)."""

    def __init__(self, threads: int, int8: bool) -> None:
        self.threads = threads
        self.int8 = int8

    def prepare(self, graph: Graph, feeds: Mapping[str, np.ndarray]) -> Callable[[], Any]:
        import onnxruntime as ort

        from optc.frontend import to_onnx

        model = to_onnx(graph).SerializeToString()
        if self.int8:
            model = _quantize_dynamic(model)
        session = ort.InferenceSession(
            model, ort_options(self.threads), providers=["CPUExecutionProvider"]
        )
        return lambda: session.run(None, dict(feeds))


def ort_options(threads: int) -> Any:
    """The ``ort-*`` devices' session options: ``threads`` intra-op threads, one
    inter-op thread, no spin-waiting, warnings off (the quantized graphs' are benign)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return options


def _quantize_dynamic(model: bytes) -> bytes:
    """int8 weights, activations quantized at run time (onnxruntime's dynamic quantization)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(prefix="optc-int8-") as tmp:
        source, target = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        source.write_bytes(model)
        # The quantizer warns on the root logger for every model ("consider
        # pre-processing"); that advice is about accuracy, not latency.
        logging.disable(logging.WARNING)
        try:
            quantize_dynamic(source, target, weight_type=QuantType.QInt8)
        finally:
            logging.disable(logging.NOTSET)
        return target.read_bytes()


class TorchRunner:
    """The reference interpreter (``optc.interp``) on ``threads`` torch threads."""

    def __init__(self, threads: int) -> None:
        self.threads = threads

    def prepare(self, graph: Graph, feeds: Mapping[str, np.ndarray]) -> Callable[[], Any]:
        import torch

        from optc.interp import run

        tensors = {name: torch.from_numpy(np.ascontiguousarray(a)) for name, a in feeds.items()}

        def call() -> Any:
            with torch.inference_mode():
                return run(graph, tensors)

        return call

    @contextlib.contextmanager
    def threads_set(self) -> Iterator[None]:
        """torch's thread count is process-wide: set it for the timing, then restore it."""
        import torch

        before = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            yield
        finally:
            torch.set_num_threads(before)


def time_rpc(graph: Graph, target: str, tracker: RpcTracker, repeat: int,
             warmup: int) -> list[float]:
    """Build for the optc target ``target``, upload, time on the tracker's device."""
    from optc.codegen import build, measure_remote, write_artifact
    from optc.target import get_target

    spec = get_target(target)
    built = build(graph, spec.tvm_target_dict, cross_compiler=spec.cross_compiler)
    with tempfile.TemporaryDirectory(prefix="optc-rpc-") as tmp:
        folder = write_artifact(built, Path(tmp) / "artifact")
        timing = measure_remote(folder, tracker.host, tracker.port, tracker.key,
                                feeds_for(graph), warmup=warmup, repeat=repeat)
    return list(timing.samples_s)
