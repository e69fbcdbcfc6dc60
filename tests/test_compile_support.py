"""Shared helpers for the compile / measure tests: an isolated, calibrated cache; models
TVM cannot compile; a loopback RPC tracker with one CPU server.

Named ``test_*`` only so that it sits with the tests it serves; it holds no tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from rpc_loopback import HOST as RPC_HOST  # noqa: F401 (re-exported for the compile tests)
from rpc_loopback import free_port, loopback_tracker  # noqa: F401 (free_port: re-exported)

from optc.target import get_target

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "models"
DIGITS = EXAMPLES / "digits_cnn.onnx"
DIGITS_TEST = EXAMPLES / "digits_test.npz"
RPC_KEY = "optc-test-compile"


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A per-session optc cache (``XDG_CACHE_HOME``) with a quick host calibration in it."""
    from optc.cost.calibration import calibrate_target

    base = tmp_path_factory.mktemp("xdg-cache")
    calibrate_target(get_target("host", calibrate=False), cache_dir=base / "optc", quick=True)
    return base


def celu_model(path: Path) -> Path:
    """A valid ONNX model whose only op (``Celu``) TVM 0.27's Relax importer lacks."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Celu", ["x"], ["y"], alpha=1.0)], "celu",
                              [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def digits_test_images(count: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``count`` held-out digits (``1x1x8x8`` float32 each) and their labels."""
    data = np.load(DIGITS_TEST)
    return data["input"][:count].astype(np.float32), data["labels"][:count]


def folder_state(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes: compare before/after a failed write."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


# -- a loopback TVM RPC tracker with one CPU server ------------------------------------------
@pytest.fixture(scope="module")
def tracker_port() -> Iterator[int]:
    """Port of a tracker on 127.0.0.1 with a CPU server registered under ``RPC_KEY``."""
    with loopback_tracker(RPC_KEY) as port:
        yield port
