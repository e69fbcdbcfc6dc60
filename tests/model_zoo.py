"""Real models for tests: onnx's ``light`` CNNs, MiniLM-L6 and EfficientNet-Lite0.

Import it from a test module (pytest puts ``tests/`` on ``sys.path``)::

    import model_zoo

    @pytest.fixture(scope="session")
    def minilm_legacy(tmp_path_factory):
        return model_zoo.minilm_onnx(tmp_path_factory, dynamo=False)

Exports are made on first use and cached for the rest of the session under
``tmp_path_factory.getbasetemp() / "model_zoo"``, so test modules share them; nothing
runs at import time. Weights come from installed packages only (no hub access).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from optc import zoo
from optc.errors import UserInputError
from optc.zoo import (  # re-exported for test modules
    LIGHT_DIR,
    LIGHT_MODELS,
    ONNX_DATA,
    SENTENCE,
    backend_runner_inputs,
    light_model_path,
    light_reference_output,
)

__all__ = [
    "LIGHT_DIR", "LIGHT_MODELS", "ONNX_DATA", "SENTENCE", "backend_runner_inputs",
    "efficientnet_module", "efficientnet_onnx", "light_model_path", "light_reference_output",
    "minilm_inputs", "minilm_module", "minilm_onnx", "sample_photo",
]


def _or_skip(load: Callable[..., Any], *args: Any) -> Any:
    """Skip (with the package to install) when an optional model package is missing."""
    try:
        return load(*args)
    except UserInputError as exc:
        pytest.skip(str(exc))


def minilm_module() -> Any:
    return _or_skip(zoo.minilm_module)


def minilm_inputs(sentence: str = SENTENCE) -> dict[str, np.ndarray]:
    return _or_skip(zoo.minilm_inputs, sentence)


def efficientnet_module() -> Any:
    return _or_skip(zoo.efficientnet_module)


def sample_photo(index: int = 0) -> np.ndarray:
    return _or_skip(zoo.sample_photo, index)


def minilm_onnx(tmp_path_factory: pytest.TempPathFactory, *, dynamo: bool) -> Path:
    """MiniLM exported with the TorchScript (opset 17) or the dynamo (opset 18) exporter."""
    name = f"minilm_{'dynamo' if dynamo else 'legacy'}"
    return _cached(tmp_path_factory, name, lambda p: zoo.export_minilm(p, dynamo=dynamo))


def efficientnet_onnx(tmp_path_factory: pytest.TempPathFactory, *, dynamo: bool) -> Path:
    """EfficientNet-Lite0 exported with the TorchScript (opset 17) or dynamo (18) exporter."""
    name = f"efficientnet_lite0_{'dynamo' if dynamo else 'legacy'}"
    return _cached(tmp_path_factory, name, lambda p: zoo.export_efficientnet(p, dynamo=dynamo))


def _cached(tmp_path_factory: pytest.TempPathFactory, name: str,
            export: Callable[[Path], Any]) -> Path:
    """``<session tmp>/model_zoo/<name>/model.onnx``, exported on first use.

    The export goes to a scratch folder renamed into place, so a crash never leaves a
    half-written model for later tests to trip on.
    """
    root = tmp_path_factory.getbasetemp() / "model_zoo"
    target = root / name
    path = target / "model.onnx"
    if path.is_file():
        return path
    root.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=root))
    try:
        _or_skip(export, scratch / "model.onnx")
        scratch.rename(target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return path
