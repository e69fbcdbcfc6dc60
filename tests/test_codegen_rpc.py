"""Remote measurement end to end: a TVM RPC tracker and a server registered to it under a
key, both started here on 127.0.0.1, and SqueezeNet compiled, uploaded, run and timed
through them."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from pass_support import light_model, ramp_inputs
from rpc_loopback import HOST, free_port, loopback_tracker

from optc.codegen import (
    build,
    host_target,
    load_artifact,
    measure_remote,
    run,
    run_remote,
    write_artifact,
)
from optc.codegen.remote import remote_vm
from optc.errors import UserInputError

KEY = "optc-test-cpu"


@pytest.fixture(scope="module")
def tracker_port() -> Iterator[int]:
    with loopback_tracker(KEY) as port:
        yield port


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


def test_busy_device_times_out_with_a_clear_error(artifact: Path, tracker_port: int) -> None:
    """While one lease holds the only server, a second waits, then fails in one line."""
    with remote_vm(artifact, HOST, tracker_port, KEY) as (vm, device, _manifest):
        assert vm is not None
        started = time.monotonic()
        busy = pytest.raises(UserInputError, match=rf"no device under key '{KEY}'.*within 1 s")
        with busy, remote_vm(artifact, HOST, tracker_port, KEY, free_timeout=1.0):
            pass
        assert time.monotonic() - started < 10
    del vm, device  # the remote device handle keeps its session alive too
    # the lease ended with the block and the handles: the device is free again
    assert measure_remote(artifact, HOST, tracker_port, KEY, warmup=1, repeat=1).median_s > 0
