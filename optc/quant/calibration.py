"""Calibration data for quantization: real samples from an ``.npz`` file, or a synthetic fallback.

A calibration set maps each graph input name to an array whose first axis counts
samples (``N``); every other axis must match the input's static dimensions. An optional
array ``labels`` (integers, ``N`` first) turns the fidelity measure into task accuracy.
The samples axis is independent of the model's batch dimension: a model exported with
batch 1 is calibrated on ``N`` samples all the same (``optc.quant.evaluate`` runs them in
chunks).

Without calibration data, ``synthetic_calibration`` makes deterministic inputs
(standard normal for floats, small non-negative integers for integer inputs, fixed
seed) and logs a warning: accuracy cannot be measured then, only fidelity to the fp32
model on inputs that may look nothing like real ones.
"""

from __future__ import annotations

import dataclasses
import logging
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from optc.errors import UserInputError
from optc.ir.graph import Graph, Value

log = logging.getLogger(__name__)

LABELS = "labels"
"""The reserved array name for task labels (a graph input of that name wins)."""
SYNTHETIC_SAMPLES = 16
SYNTHETIC_DIM = 16     # size given to a symbolic non-sample dimension (sequence length...)
SYNTHETIC_INT_HIGH = 16  # integer inputs (token ids, indices) drawn from [0, 16)


@dataclasses.dataclass(frozen=True, eq=False)
class Calibration:
    """Validated calibration samples: ``inputs`` by graph input name, optional ``labels``."""

    inputs: Mapping[str, np.ndarray]
    labels: np.ndarray | None = None
    synthetic: bool = False
    source: str = ""

    @property
    def size(self) -> int:
        """Number of samples ``N``."""
        return int(next(iter(self.inputs.values())).shape[0]) if self.inputs else 0

    def subset(self, count: int) -> Calibration:
        """The first ``count`` samples (all of them when there are fewer)."""
        if count >= self.size:
            return self
        labels = None if self.labels is None else self.labels[:count]
        return dataclasses.replace(self, inputs={k: v[:count] for k, v in self.inputs.items()},
                                   labels=labels)

    def as_mapping(self) -> dict[str, np.ndarray]:
        """Inputs plus ``labels``: the form ``PassContext.calibration`` carries."""
        data = dict(self.inputs)
        if self.labels is not None:
            data[LABELS] = self.labels
        return data


def load_calibration(path: str | Path, graph: Graph) -> Calibration:
    """Read and validate ``path`` (an ``.npz`` with one array per graph input, ``labels``
    optional); every problem is a one-line ``UserInputError`` (CLI exit code 2)."""
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"calibration file {str(path)!r} does not exist")
    if not zipfile.is_zipfile(path):
        raise UserInputError(f"calibration file {str(path)!r} is not an .npz archive "
                             "(write one with numpy.savez(path, <input name>=array, ...))")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise UserInputError(f"calibration file {str(path)!r} cannot be read: {exc}") from None
    return calibration_from_mapping(arrays, graph, source=str(path))


def calibration_from_mapping(arrays: Mapping[str, np.ndarray], graph: Graph,
                             source: str = "calibration data") -> Calibration:
    """Validate arrays named like the graph inputs (plus optional ``labels``)."""
    expected = {v.name: v for v in graph.inputs}
    missing = [name for name in expected if name not in arrays]
    if missing:
        raise UserInputError(f"{source}: no array for model input(s) {missing} "
                             f"(found: {sorted(arrays)})")
    unknown = sorted(set(arrays) - set(expected) - {LABELS})
    if unknown:
        raise UserInputError(f"{source}: arrays {unknown} are not inputs of the model "
                             f"(inputs: {sorted(expected)}; '{LABELS}' is also accepted)")
    inputs = {name: _checked_input(np.asarray(arrays[name]), value, source)
              for name, value in expected.items()}
    sizes = {name: int(a.shape[0]) for name, a in inputs.items()}
    if len(set(sizes.values())) > 1:
        raise UserInputError(f"{source}: inputs disagree on the number of samples {sizes}")
    count = next(iter(sizes.values()), 0)
    labels = None
    if LABELS in arrays and LABELS not in expected:
        labels = _checked_labels(np.asarray(arrays[LABELS]), count, source)
    return Calibration(inputs, labels, synthetic=False, source=source)


def _checked_input(array: np.ndarray, value: Value, source: str) -> np.ndarray:
    where = f"{source}: input {value.name!r}"
    if value.dtype is not None and array.dtype.name != value.dtype:
        raise UserInputError(f"{where} is {array.dtype.name}, the model expects {value.dtype} "
                             f"(convert it with .astype('{value.dtype}'))")
    if array.ndim == 0 or array.shape[0] == 0:
        raise UserInputError(f"{where} has no samples (shape {array.shape}); the first axis "
                             "counts calibration samples")
    if value.shape is not None:
        dims_ok = array.ndim == len(value.shape) and all(
            not isinstance(want, int) or want == got
            for want, got in zip(value.shape[1:], array.shape[1:], strict=True))
        if not dims_ok:
            wanted = ("N", *value.shape[1:])
            raise UserInputError(f"{where} has shape {array.shape}, the model expects "
                                 f"{wanted} (N = number of samples)")
    return array


def _checked_labels(labels: np.ndarray, count: int, source: str) -> np.ndarray:
    if labels.dtype.kind not in "iu":
        raise UserInputError(f"{source}: '{LABELS}' must hold integer class indices, "
                             f"got {labels.dtype.name}")
    if labels.ndim == 0 or labels.shape[0] != count:
        raise UserInputError(f"{source}: '{LABELS}' has shape {labels.shape}, expected "
                             f"{count} samples first")
    if labels.min() < 0:
        raise UserInputError(f"{source}: '{LABELS}' holds negative class indices")
    return labels.astype(np.int64)


def synthetic_calibration(graph: Graph, samples: int = SYNTHETIC_SAMPLES,
                          seed: int = 0) -> Calibration:
    """Deterministic stand-in inputs (no labels) in each input's dtype and shape."""
    rng = np.random.default_rng(seed)
    inputs = {value.name: _synthetic_array(value, samples, rng) for value in graph.inputs}
    log.warning("no calibration data given: quantization fidelity is measured on %d "
                "synthetic samples (seed %d), not on real data; pass --calib FILE.npz",
                samples, seed)
    return Calibration(inputs, None, synthetic=True, source=f"synthetic(seed={seed})")


def _synthetic_array(value: Value, samples: int, rng: np.random.Generator) -> np.ndarray:
    if value.shape is None or value.dtype is None:
        raise UserInputError(f"input {value.name!r} has no known dtype and shape: give "
                             "calibration data (--calib FILE.npz)")
    dims = [d if isinstance(d, int) else SYNTHETIC_DIM for d in value.shape[1:]]
    shape = (samples, *dims)
    dtype = np.dtype(value.dtype)
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    if dtype.kind in "iu":
        return rng.integers(0, SYNTHETIC_INT_HIGH, size=shape).astype(dtype)
    if dtype.kind == "b":
        return rng.random(shape) < 0.5
    raise UserInputError(f"input {value.name!r} is {value.dtype}: no synthetic data for it; "
                         "give calibration data (--calib FILE.npz)")


def resolve_calibration(graph: Graph, given: Mapping[str, np.ndarray] | Calibration | None,
                        samples: int, seed: int = 0) -> Calibration:
    """The calibration to use: ``given`` (validated, first ``samples``) or synthetic data."""
    if given is None:
        return synthetic_calibration(graph, min(samples, SYNTHETIC_SAMPLES), seed)
    calibration = given if isinstance(given, Calibration) else \
        calibration_from_mapping(given, graph, source="PassContext.calibration")
    return calibration.subset(samples)
