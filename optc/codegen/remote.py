"""Run and time an artifact on a remote device through TVM's RPC tracker.

The device runs ``python -m tvm.exec.rpc_server --tracker HOST:PORT --key KEY``; optc
asks the tracker for a device with that key, uploads the (verified) library, loads it
into a Relax VM on the device and times it there (see ``measure``).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import socket
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from tvm import relax, rpc

from optc.codegen.manifest import Manifest, read_manifest
from optc.codegen.measure import Timing, check_counts, last_outputs, time_vm
from optc.codegen.run import device_tensors
from optc.codegen.signature import example_feeds
from optc.errors import UserInputError

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0
FREE_DEVICE_TIMEOUT_S = 300.0
"""How long a lease waits for a busy device before giving up (the tracker itself would
queue the request forever)."""
_POLL_S = 0.2


@contextlib.contextmanager
def remote_vm(artifact: str | Path | Manifest, tracker_host: str, tracker_port: int, key: str,
              session_timeout: float = 600.0, free_timeout: float = FREE_DEVICE_TIMEOUT_S,
              ) -> Iterator[tuple[Any, Any, Manifest]]:
    """``(vm, device, manifest)`` of the artifact loaded on a device leased from the tracker.

    The lease ends (and the device's temporary files go) once the caller drops the VM,
    the device and any tensors on it; ``session_timeout`` (seconds) bounds the lease on
    the server side, ``free_timeout`` how long to wait for a busy device.
    """
    manifest = artifact if isinstance(artifact, Manifest) else read_manifest(artifact)
    where = f"RPC tracker {tracker_host}:{tracker_port}"
    try:
        # TVM's client retries a refused connection for 60 s; a wrong address fails now.
        socket.create_connection((tracker_host, tracker_port), timeout=CONNECT_TIMEOUT_S).close()
        tracker = rpc.connect_tracker(tracker_host, tracker_port)
    except (OSError, RuntimeError) as exc:
        raise UserInputError(f"cannot reach the {where}: {exc}") from exc
    try:
        _require_key(tracker, key, where)
        # A session ends only when its last handle is freed. One that an earlier lease
        # left in a reference cycle would keep the device busy (and this request queued)
        # until the cycle collector happens to run: collect it now.
        gc.collect()
        _wait_for_free(tracker, key, where, free_timeout)
        session = tracker.request(key, session_timeout=session_timeout)
        name = f"optc-{manifest.library_sha256[:16]}.so"
        session.upload(str(manifest.library), target=name)
        device = session.cuda() if manifest.device == "cuda" else session.cpu()
        vm = relax.VirtualMachine(session.load_module(name), device)
        log.info("loaded %s on %r via %s", manifest.folder, key, where)
        yield vm, device, manifest
    except RuntimeError as exc:  # RPC failures (tvm.error.RPCError) are RuntimeErrors
        raise UserInputError(f"remote device {key!r} via {where} failed: "
                             f"{str(exc).strip().splitlines()[-1][:300]}") from exc
    finally:
        tracker.close()


def _require_key(tracker: Any, key: str, where: str) -> None:
    """Fail fast: a request for a key no server registered would wait forever."""
    queues = tracker.summary().get("queue_info", {})
    if key not in queues:
        raise UserInputError(f"no device is registered under key {key!r} at the {where} "
                             f"(registered: {sorted(queues) or 'none'})")


def _wait_for_free(tracker: Any, key: str, where: str, timeout: float) -> None:
    """Block until a server under ``key`` is free; a clear error after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while tracker.summary().get("queue_info", {}).get(key, {}).get("free", 0) <= 0:
        if time.monotonic() >= deadline:
            raise UserInputError(f"no device under key {key!r} at the {where} became free "
                                 f"within {timeout:.0f} s (all are leased)")
        time.sleep(_POLL_S)


def measure_remote(artifact: str | Path | Manifest, tracker_host: str, tracker_port: int,
                   key: str, feeds: Mapping[str, Any] | None = None, *, warmup: int = 1,
                   repeat: int = 10, number: int = 1, session_timeout: float = 600.0) -> Timing:
    """Time ``artifact`` on a device leased from the tracker under ``key``."""
    check_counts(warmup, repeat, number)
    with remote_vm(artifact, tracker_host, tracker_port, key, session_timeout) as (
            vm, device, manifest):
        args = device_tensors(manifest.inputs, feeds if feeds is not None else
                              example_feeds(manifest.inputs), device)
        return time_vm(vm, device, args, warmup=warmup, repeat=repeat, number=number,
                       where=f"rpc {key}@{tracker_host}:{tracker_port} {manifest.device}")


def run_remote(artifact: str | Path | Manifest, tracker_host: str, tracker_port: int, key: str,
               feeds: Mapping[str, Any], session_timeout: float = 600.0,
               ) -> dict[str, np.ndarray]:
    """Run ``artifact`` once on a device leased from the tracker; outputs come back."""
    with remote_vm(artifact, tracker_host, tracker_port, key, session_timeout) as (
            vm, device, manifest):
        vm.set_input("main", *device_tensors(manifest.inputs, feeds, device))
        vm.invoke_stateful("main")
        return last_outputs(vm, manifest.outputs)
