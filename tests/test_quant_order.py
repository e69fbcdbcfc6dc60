"""The dependency-augmented layer order against the plain Hessian order, through
``benchmarks/mixed_precision_order.py`` in its quick mode.

On the 4-layer digits CNN the two orders agree (nothing to gain, nothing lost); the
claim that the augmentation orders layers better is checked on EfficientNet-Lite0 with
real photos (heavy: Hessian-vector products through 50 layers take minutes on a CPU).
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCHMARK = Path(__file__).resolve().parent.parent / "benchmarks" / "mixed_precision_order.py"
DARKNET_PHOTOS = Path("/usr/share/darknet/data")


def benchmark() -> ModuleType:
    spec = importlib.util.spec_from_file_location("mixed_precision_order", BENCHMARK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def check_shape(result: dict[str, Any]) -> None:
    counts = result["counts"]
    assert counts == sorted(counts) and len(counts) >= 3
    for key in ("plain_drop", "augmented_drop", "plain_loss", "augmented_loss"):
        assert len(result[key]) == len(counts)
        assert all(math.isfinite(x) for x in result[key])


def test_digits_quick() -> None:
    result = benchmark().main(["digits", "--quick"])
    check_shape(result)
    assert result["precision"] == "w4a16" and result["held_out"] == 450
    assert result["mean_loss"]["augmented"] <= result["mean_loss"]["plain"] * 1.05
    assert result["mean_drop"]["augmented"] <= result["mean_drop"]["plain"] + 1 / 450


@pytest.mark.heavy
def test_efficientnet_augmented_order_beats_plain_hessian() -> None:
    pytest.importorskip("efficientnet_lite_pytorch")
    pytest.importorskip("PIL")
    if not DARKNET_PHOTOS.is_dir():
        pytest.skip("needs the darknet package's photos (apt-get install darknet)")
    result = benchmark().main(["efficientnet", "--quick", "--photos", str(DARKNET_PHOTOS)])
    check_shape(result)
    # fidelity on held-out photo crops, averaged over the sweep of lowered layers
    assert result["mean_loss"]["augmented"] < result["mean_loss"]["plain"]
    assert result["mean_drop"]["augmented"] <= result["mean_drop"]["plain"]
