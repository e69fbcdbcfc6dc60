"""Real models by name (``zoo:NAME`` in a dataset), the held-out host evaluation set.

These are never part of the meta-training data: they are what the learned model is
checked on. Names: ``minilm`` (all-MiniLM-L6-v2, one tokenized sentence),
``efficientnet-lite0`` (224x224), ``digits-cnn`` (the CNN bundled in
``examples/models``, present in a source checkout) and ``light-<name>`` for onnx's
light models (``optc.zoo.LIGHT_MODELS``).

Each graph is cleaned up by optc's exact passes (``CLEANUP``) first, the form optc
compiles: exporters leave shape arithmetic (EfficientNet's "same" padding computed from
``Shape``) that TVM's importer refuses as dynamic, and folding makes it constant.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import optc
from optc import zoo
from optc.errors import UnknownNameError, UserInputError
from optc.ir import Graph

DIGITS_CNN = Path(optc.__file__).resolve().parents[1] / "examples" / "models" / "digits_cnn.onnx"
REAL_MODELS = ("minilm", "efficientnet-lite0", "digits-cnn")
ZOO_MODELS = (*REAL_MODELS, *(f"light-{name}" for name in zoo.LIGHT_MODELS))


CLEANUP = "fold-constants,eliminate-dead-code"


def zoo_graph(name: str) -> Graph:
    """The graph of the real model ``name`` (see ``ZOO_MODELS``), static shapes, cleaned up."""
    from optc.pipeline import PassContext, Pipeline

    graph = _raw_graph(name)
    return Pipeline.parse(CLEANUP).run(graph, PassContext()).graph.replace(name=name)


def _raw_graph(name: str) -> Graph:
    from optc.frontend import load_onnx

    if name.startswith("light-") and name.removeprefix("light-") in zoo.LIGHT_MODELS:
        return load_onnx(zoo.light_model_path(name.removeprefix("light-"))).replace(name=name)
    if name == "digits-cnn":
        if not DIGITS_CNN.is_file():
            raise UserInputError(f"the digits CNN is not here ({DIGITS_CNN}): it ships in the "
                                 "source checkout's examples/models")
        return load_onnx(DIGITS_CNN).replace(name=name)
    exports = {"minilm": zoo.export_minilm, "efficientnet-lite0": zoo.export_efficientnet}
    if name not in exports:
        raise UnknownNameError(f"unknown zoo model {name!r} (known: {', '.join(ZOO_MODELS)})")
    with tempfile.TemporaryDirectory(prefix="optc-zoo-") as tmp:
        path = exports[name](Path(tmp) / f"{name}.onnx", dynamo=False)
        return load_onnx(path).replace(name=name)
