"""TVM's CPU thread pool runs on every core optc compiles for, unless the user chose.

TVM's default is half the logical cores on x86: one thread on a 2-vCPU machine, where
optc's parallel loops then run serially. Each case runs in a fresh interpreter, because
the pool is sized once per process."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from optc.codegen.host_cpu import available_cores

PROBE = "import optc.codegen; from optc.codegen.host_cpu import pool_threads; print(pool_threads())"


def _pool_threads(env: dict[str, str]) -> int:
    done = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True,
                          text=True, timeout=300, check=True)
    return int(done.stdout.split()[-1])


def test_pool_uses_every_available_core() -> None:
    env = {k: v for k, v in os.environ.items() if k != "TVM_NUM_THREADS"}
    assert _pool_threads(env) == available_cores()


@pytest.mark.skipif(available_cores() < 2, reason="needs two cores to tell the counts apart")
def test_user_choice_is_kept() -> None:
    env = dict(os.environ, TVM_NUM_THREADS="1")
    assert _pool_threads(env) == 1
