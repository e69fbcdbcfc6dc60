"""Run a loaded artifact on numpy feeds."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import tvm

from optc.codegen.artifact import LoadedArtifact
from optc.codegen.signature import TensorSpec, check_feeds
from optc.errors import UserInputError


def device_tensors(inputs: Sequence[TensorSpec], feeds: Mapping[str, Any],
                   device: Any) -> list[Any]:
    """The checked feeds as TVM tensors on ``device`` (local or remote), in input order."""
    return [tvm.runtime.tensor(array, device) for array in check_feeds(inputs, feeds)]


def outputs_to_numpy(outputs: Sequence[TensorSpec], result: Any) -> dict[str, np.ndarray]:
    """Name the VM's result (one tensor, or a tuple of them) by the model's outputs."""
    values = [result] if hasattr(result, "numpy") else list(result)
    if len(values) != len(outputs):
        raise UserInputError(f"the model returned {len(values)} values for "
                             f"{len(outputs)} outputs")
    return {spec.name: value.numpy() for spec, value in zip(outputs, values, strict=True)}


def run(artifact: LoadedArtifact, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Run the model once: ``{input name: array}`` -> ``{output name: array}``."""
    args = device_tensors(artifact.manifest.inputs, feeds, artifact.device)
    result = artifact.vm["main"](*args)
    return outputs_to_numpy(artifact.manifest.outputs, result)
