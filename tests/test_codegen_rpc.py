"""Remote measurement end to end: a TVM RPC tracker and a server registered to it under a
key, both started here on 127.0.0.1, and SqueezeNet compiled, uploaded, run and timed
through them."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from pass_support import light_model, ramp_inputs

from optc.codegen import (
    build,
    host_target,
    load_artifact,
    measure_remote,
    run,
    run_remote,
    write_artifact,
)
from optc.errors import UserInputError

pytest.importorskip("tornado", reason="TVM's RPC tracker needs tornado")
pytest.importorskip("psutil", reason="TVM's RPC server needs psutil")
# After the skips: the tracker module imports tornado.
from tvm import rpc
from tvm.rpc.tracker import Tracker

KEY = "optc-test-cpu"
HOST = "127.0.0.1"
REGISTER_TIMEOUT_S = 60.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def wait_registered(port: int, key: str) -> None:
    """Block until a server for ``key`` is free at the tracker, or fail after a deadline."""
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


@pytest.fixture(scope="module")
def tracker_port() -> Iterator[int]:
    # TVM's tracker and server search upward from the given port for a free one.
    start = free_port()
    tracker = Tracker(host=HOST, port=start, port_end=start + 100, silent=True)
    server_start = free_port()
    server = rpc.Server(host=HOST, port=server_start, port_end=server_start + 100,
                        tracker_addr=(HOST, tracker.port), key=KEY, silent=True)
    try:
        wait_registered(tracker.port, KEY)
        yield tracker.port
    finally:
        server.terminate()  # the server first: it reports to the tracker until it stops
        tracker.terminate()


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    built = build(light_model("squeezenet"), host_target())
    return write_artifact(built, tmp_path_factory.mktemp("rpc") / "squeezenet")


def test_measure_remote(artifact: Path, tracker_port: int) -> None:
    timing = measure_remote(artifact, HOST, tracker_port, KEY, warmup=1, repeat=3)
    assert len(timing.samples_s) == 3
    assert all(s > 0 for s in timing.samples_s)
    assert timing.min_s <= timing.median_s <= timing.p90_s
    assert timing.where.startswith(f"rpc {KEY}@")


def test_run_remote_matches_local(artifact: Path, tracker_port: int) -> None:
    feeds = ramp_inputs(light_model("squeezenet"))
    remote = run_remote(artifact, HOST, tracker_port, KEY, feeds)
    local = run(load_artifact(artifact), feeds)
    assert remote.keys() == local.keys()
    for name, value in local.items():
        np.testing.assert_allclose(remote[name], value, rtol=1e-6, err_msg=name)


def test_unknown_key_fails_fast(artifact: Path, tracker_port: int) -> None:
    with pytest.raises(UserInputError, match=rf"no device .* key 'no-such-device'.*{KEY}"):
        measure_remote(artifact, HOST, tracker_port, "no-such-device")


def test_unreachable_tracker(artifact: Path) -> None:
    started = time.monotonic()
    with pytest.raises(UserInputError, match="cannot reach the RPC tracker"):
        measure_remote(artifact, HOST, free_port(), KEY)
    assert time.monotonic() - started < 10
