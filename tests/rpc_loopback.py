"""A TVM RPC tracker with one CPU server registered to it, both on 127.0.0.1.

Shared by the tests that measure through RPC end to end (codegen and compile); each
test module opens its own under its own key.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator

import pytest

HOST = "127.0.0.1"
REGISTER_TIMEOUT_S = 60.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def wait_registered(port: int, key: str) -> None:
    """Block until a server for ``key`` is free at the tracker, or fail after a deadline."""
    from tvm import rpc

    deadline = time.monotonic() + REGISTER_TIMEOUT_S
    tracker = rpc.connect_tracker(HOST, port)
    try:
        while time.monotonic() < deadline:
            if tracker.summary().get("queue_info", {}).get(key, {}).get("free", 0) > 0:
                return
            time.sleep(0.2)
    finally:
        tracker.close()
    pytest.fail(f"the RPC server did not register {key!r} within {REGISTER_TIMEOUT_S} s")


@contextlib.contextmanager
def loopback_tracker(key: str) -> Iterator[int]:
    """The port of a running tracker with a CPU server registered under ``key``."""
    pytest.importorskip("tornado", reason="TVM's RPC tracker needs tornado")
    pytest.importorskip("psutil", reason="TVM's RPC server needs psutil")
    from tvm import rpc
    from tvm.rpc.tracker import Tracker  # imports tornado: after the skips

    # TVM's tracker and server search upward from the given port for a free one.
    start = free_port()
    tracker = Tracker(host=HOST, port=start, port_end=start + 100, silent=True)
    server_start = free_port()
    server = rpc.Server(host=HOST, port=server_start, port_end=server_start + 100,
                        tracker_addr=(HOST, tracker.port), key=key, silent=True)
    try:
        wait_registered(tracker.port, key)
        yield tracker.port
    finally:
        server.terminate()  # the server first: it reports to the tracker until it stops
        tracker.terminate()
