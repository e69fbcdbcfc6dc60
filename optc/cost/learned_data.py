"""Measured samples for the learned latency model, from any source, and device embeddings.

A sample is a (graph, latency) pair: the graph an optc ``Graph`` or an ONNX file path,
the latency in seconds. Rows of an ``optc.latency`` dataset (objects with ``graph_hash``
and ``latency_s``) are accepted as they are: their graph is rebuilt only when its
features are not cached yet.

A device's hardware embedding (after HELP) is the latencies of the fixed reference
models on it, min-max normalised over the references so that it describes the device's
*shape* (which kinds of model it is good at), plus one number HELP does not have: the
standardized log of their mean latency, the device's overall speed, which lets the
model predict absolute latencies (MAPE), not just rankings.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from optc.errors import UserInputError
from optc.ir.graph import Graph


@dataclasses.dataclass(frozen=True)
class Labeled:
    """One measured sample: the graph's cache ``key``, its latency, how to get the graph."""

    key: str
    latency_s: float
    load: Callable[[], Graph] = dataclasses.field(compare=False, repr=False)
    name: str = ""  # a dataset row's model name (``gen:...`` spec key), when known


def labeled(item: Any) -> Labeled:
    """A sample in any accepted form as a ``Labeled`` (a clear error for anything else)."""
    if isinstance(item, Labeled):
        return item
    if hasattr(item, "graph_hash") and hasattr(item, "latency_s"):
        return Labeled(
            str(item.graph_hash),
            _latency(item.latency_s),
            _dataset_loader(item),
            str(getattr(item, "model", "")),
        )
    if isinstance(item, Sequence) and not isinstance(item, str) and len(item) == 2:
        source, latency = item
        graph = _graph(source)
        return Labeled(graph.structural_hash(), _latency(latency), lambda: graph)
    raise UserInputError(
        f"a latency sample must be a (graph or ONNX path, seconds) pair or a "
        f"dataset row, not {type(item).__name__}"
    )


def labeled_all(items: Iterable[Any]) -> list[Labeled]:
    return [labeled(item) for item in items]


def _latency(value: Any) -> float:
    latency = float(value)
    if not math.isfinite(latency) or latency <= 0:
        raise UserInputError(
            f"a measured latency must be a positive number of seconds, not {value!r}"
        )
    return latency


def _graph(source: Any) -> Graph:
    if isinstance(source, Graph):
        return source
    if isinstance(source, str | Path):
        from optc.frontend import load_onnx

        return load_onnx(Path(source))
    raise UserInputError(
        f"a latency sample's model must be an optc Graph or an ONNX path, "
        f"not {type(source).__name__}"
    )


def _dataset_loader(row: Any) -> Callable[[], Graph]:
    def load() -> Graph:
        from optc.latency.dataset import graph_for  # deferred: only for uncached rows

        return graph_for(row)

    return load


def reference_keys(devices: Mapping[str, Sequence[Labeled]]) -> tuple[str, ...]:
    """Graph keys of the fixed reference models (``optc.latency.arch.reference_specs``), in
    their order: from dataset rows naming them where every one is there, else by building
    the reference graphs (a few seconds each)."""
    from optc.latency.arch import reference_specs

    specs = [spec.key() for spec in reference_specs()]
    named = {s.name: s.key for samples in devices.values() for s in samples if s.name}
    if all(spec in named for spec in specs):
        return tuple(named[spec] for spec in specs)
    return tuple(spec.build().structural_hash() for spec in reference_specs())


@dataclasses.dataclass(frozen=True)
class EmbeddingSpace:
    """How reference latencies become embeddings: which keys, and the training stats."""

    reference_keys: tuple[str, ...]
    scale_mean: float = 0.0
    scale_std: float = 1.0
    fallback: tuple[float, ...] = ()

    @property
    def size(self) -> int:
        return len(self.reference_keys) + 1

    def raw(self, samples: Sequence[Labeled]) -> np.ndarray | None:
        """Reference latencies in reference order (NaN where not measured); None when
        fewer than two references were measured (no shape to normalise)."""
        by_key = {s.key: s.latency_s for s in samples}
        values = np.array([by_key.get(k, np.nan) for k in self.reference_keys])
        return None if np.count_nonzero(~np.isnan(values)) < 2 else values

    def embed(self, samples: Sequence[Labeled]) -> np.ndarray:
        """The device's embedding; the training devices' mean without references (missing
        references are taken from that mean too)."""
        values = self.raw(samples)
        if values is None:
            return np.asarray(self.fallback, dtype=np.float64)
        return self._embed_raw(values)

    def _embed_raw(self, values: np.ndarray) -> np.ndarray:
        known = values[~np.isnan(values)]
        low, high = known.min(), known.max()
        shape = (values - low) / (high - low) if high > low else np.zeros_like(values)
        if self.fallback:
            shape = np.where(np.isnan(shape), np.asarray(self.fallback[:-1]), shape)
        scale = (math.log(float(known.mean())) - self.scale_mean) / self.scale_std
        return np.append(shape, scale)

    def fitted(self, devices: Mapping[str, Sequence[Labeled]]) -> EmbeddingSpace:
        """This space with its scale statistics and fallback taken from ``devices``."""
        raws = [r for r in (self.raw(s) for s in devices.values()) if r is not None]
        if not raws:
            raise UserInputError(
                "no training device has reference-model latencies: measure "
                "the reference models (optc.latency.arch.reference_specs) "
                "on every training device"
            )
        scales = [math.log(float(np.nanmean(r))) for r in raws]
        stats = dataclasses.replace(
            self,
            scale_mean=float(np.mean(scales)),
            scale_std=float(np.std(scales)) or 1.0,
            fallback=(),
        )
        mean = np.nanmean(np.stack([stats._embed_raw(r) for r in raws]), axis=0)
        return dataclasses.replace(stats, fallback=tuple(float(v) for v in mean))
