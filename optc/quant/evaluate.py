"""Run graph variants on calibration data through the reference interpreter and score them.

Samples run in chunks (``optc.quant.batching``), through a batch-polymorphic twin of
the model.

Loss (what sensitivities differentiate and the dependency terms measure): cross-entropy
with labels, otherwise KL(fp32 teacher || variant) over the class axis (axis 1) of a
logits-like first output, otherwise the mean squared error to the fp32 output.
Score (what ``max_drop`` bounds): top-1 accuracy with labels, otherwise top-1 agreement
with the fp32 model for logits (``[N, classes]``, ``[N, classes, H, W]``), otherwise
cosine similarity (3-D sequence outputs included); ``drop = score(fp32) - score(variant)``.

Padded tokens: when the calibration data has an ``attention_mask`` input (Hugging Face
models) whose ``[N, T]`` are the first two axes of the output, the cosine and the squared
error count only the unmasked tokens. The hidden states of padding are no part of any
result (pooling and heads mask them), and on MiniLM-L6 they decided the search: all 36
layers w7a8 kept 0.996 cosine on the real tokens of eight sentences but 0.59 on their
padding, which held the whole model to 0.961 and two layers at fp32.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator, Mapping
from typing import Literal

import numpy as np
import torch

from optc.errors import UserInputError
from optc.interp import run
from optc.ir.graph import Graph
from optc.quant.batching import chunk_size, symbolic_batch
from optc.quant.calibration import Calibration

log = logging.getLogger(__name__)

Metric = Literal["auto", "accuracy", "agreement", "cosine"]


@dataclasses.dataclass(frozen=True)
class Measure:
    """A variant's loss and score on the calibration set, and its drop from fp32."""

    loss: float
    score: float
    drop: float


class Evaluator:
    """Scores graph variants (same inputs and first output as ``graph``) on ``calibration``."""

    def __init__(self, graph: Graph, calibration: Calibration, metric: Metric = "auto") -> None:
        self.calibration = calibration
        self.output = graph.output_names[0]
        self.chunk = chunk_size(graph, calibration)
        with torch.no_grad():
            self.reference = self.outputs(graph)
        self.labels = None if calibration.labels is None else \
            torch.from_numpy(calibration.labels)
        self.metric = _resolve_metric(metric, self.reference, self.labels)
        self.mask = token_mask(calibration, self.reference) if self.metric == "cosine" \
            else None
        self._check_labels()
        self.baseline = self.score(self.reference)

    # -- running ---------------------------------------------------------------------
    def chunks(self) -> Iterator[tuple[slice, dict[str, np.ndarray]]]:
        size = self.calibration.size
        for start in range(0, size, self.chunk):
            part = slice(start, min(start + self.chunk, size))
            yield part, {k: v[part] for k, v in self.calibration.inputs.items()}

    def forward(self, graph: Graph, feeds: Mapping[str, np.ndarray],
                params: Mapping[str, torch.Tensor] | None = None,
                outputs: list[str] | None = None) -> dict[str, torch.Tensor]:
        """One chunk through ``graph`` (made ``symbolic_batch`` by the caller, once)."""
        return run(graph, feeds, params=params, outputs=outputs)

    def outputs(self, graph: Graph) -> torch.Tensor:
        """The first output of ``graph`` on every calibration sample (float32, no grad)."""
        batched = symbolic_batch(graph)
        with torch.no_grad():
            parts = [self.forward(batched, feeds, outputs=[self.output])[self.output].float()
                     for _, feeds in self.chunks()]
        return torch.cat(parts)

    # -- loss and score ----------------------------------------------------------------
    def loss(self, out: torch.Tensor, part: slice | None = None) -> torch.Tensor:
        """Differentiable loss of ``out`` (rows ``part`` of the calibration set)."""
        part = part or slice(0, out.shape[0])
        if self.labels is not None:
            return torch.nn.functional.cross_entropy(out, self.labels[part])
        ref = self.reference[part]
        if self.mask is not None:
            out, ref = _masked(out, self.mask[part]), _masked(ref, self.mask[part])
        if self.metric == "agreement":
            teacher = torch.log_softmax(ref, dim=1)
            return torch.nn.functional.kl_div(torch.log_softmax(out, dim=1), teacher,
                                              log_target=True, reduction="batchmean")
        return torch.mean((out - ref) ** 2)

    def score(self, out: torch.Tensor) -> float:
        if self.metric == "accuracy":
            assert self.labels is not None
            return float((out.argmax(1) == self.labels).double().mean())
        if self.metric == "agreement":
            return float((out.argmax(1) == self.reference.argmax(1)).double().mean())
        return cosine(out, self.reference, self.mask)

    def measure(self, graph: Graph) -> Measure:
        out = self.outputs(graph)
        with torch.no_grad():
            loss = float(self.loss(out))
        score = self.score(out)
        return Measure(loss, score, self.baseline - score)

    def value_ranges(self, graph: Graph, names: list[str]) -> dict[str, tuple[float, float]]:
        """Min and max of each named value of ``graph`` over the calibration set."""
        return {name: (float(low.min()), float(high.max()))
                for name, (low, high) in self.channel_ranges(graph, names).items()}

    def channel_ranges(self, graph: Graph, names: list[str]
                       ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Min and max of each channel (the last axis) of each named value of ``graph``
        over the calibration set, float32 arrays."""
        batched = symbolic_batch(graph)
        low: dict[str, torch.Tensor] = {}
        high: dict[str, torch.Tensor] = {}
        with torch.no_grad():
            for _, feeds in self.chunks():
                for name, tensor in self.forward(batched, feeds, outputs=names).items():
                    rows = tensor.float().reshape(-1, tensor.shape[-1]) if tensor.dim() \
                        else tensor.float().reshape(1, 1)
                    part_low, part_high = rows.amin(0), rows.amax(0)
                    low[name] = torch.minimum(low[name], part_low) if name in low else part_low
                    high[name] = torch.maximum(high[name], part_high) if name in high \
                        else part_high
        return {name: (low[name].numpy(), high[name].numpy()) for name in names}

    def output_shapes(self, graph: Graph, names: list[str]) -> dict[str, tuple[int, ...]]:
        """Shapes of the named values of ``graph`` for one calibration sample."""
        feeds = {k: v[:1] for k, v in self.calibration.inputs.items()}
        with torch.no_grad():
            found = self.forward(symbolic_batch(graph), feeds, outputs=names)
        return {name: tuple(int(d) for d in tensor.shape) for name, tensor in found.items()}

    def fidelity(self, graph: Graph) -> dict[str, float]:
        """Top-1 agreement, cosine and KL of ``graph``'s output against the fp32 model."""
        out = self.outputs(graph)
        found = {"cosine": cosine(out, self.reference, self.mask)}
        if _logits_like(self.reference):
            found["agreement"] = float((out.argmax(1) == self.reference.argmax(1)).double()
                                       .mean())
            found["kl"] = float(torch.nn.functional.kl_div(
                torch.log_softmax(out, 1), torch.log_softmax(self.reference, 1),
                log_target=True, reduction="batchmean"))
        return found

    def _check_labels(self) -> None:
        if self.labels is None:
            return
        ref = self.reference
        if ref.dim() < 2 or tuple(self.labels.shape) != (ref.shape[0], *ref.shape[2:]):
            raise UserInputError(f"labels of shape {tuple(self.labels.shape)} do not fit the "
                                 f"model output {self.output!r} of shape {tuple(ref.shape)} "
                                 "(expected the output's shape without its class axis 1)")
        if int(self.labels.max()) >= ref.shape[1]:
            raise UserInputError(f"labels go up to {int(self.labels.max())} but the model "
                                 f"has {ref.shape[1]} classes")


def cosine(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """Mean per-sample cosine similarity of two outputs (over the tokens ``mask`` keeps)."""
    if mask is not None:
        a, b = _masked(a, mask), _masked(b, mask)
    x, y = a.reshape(a.shape[0], -1).double(), b.reshape(b.shape[0], -1).double()
    return float(torch.nn.functional.cosine_similarity(x, y, dim=1, eps=1e-12).mean())


def token_mask(calibration: Calibration, reference: torch.Tensor) -> torch.Tensor | None:
    """The calibration's ``attention_mask`` ``[N, T]`` as floats when the output is a
    sequence ``[N, T, ...]`` of those tokens, else None (see the module docstring)."""
    found = [v for k, v in calibration.inputs.items() if k.endswith("attention_mask")]
    if len(found) != 1 or reference.dim() < 3:
        return None
    mask = np.asarray(found[0])
    if mask.ndim != 2 or tuple(mask.shape) != tuple(reference.shape[:2]) or \
            mask.dtype.kind not in "biu" or not mask.any(axis=1).all():
        return None
    return torch.from_numpy((mask != 0).astype(np.float32))


def _masked(out: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``out`` with the masked tokens (axis 1) zeroed."""
    return out * mask.reshape(*mask.shape, *([1] * (out.dim() - 2))).to(out.dtype)


def _logits_like(out: torch.Tensor) -> bool:
    """Classification logits ``[N, classes]`` or dense ones ``[N, classes, spatial...]``
    (class axis 1, at least 2 spatial axes). A 3-D output ``[N, tokens, features]`` is a
    sequence model's (transformer hidden states; token logits put their classes last):
    top-1 over axis 1 would compare token positions, padding included, and its drop
    (MiniLM-L6, every layer w8a8: 0.137 "agreement" at a 0.991 cosine) rejected nearly
    every int8 layer. It is scored by cosine similarity."""
    if not out.is_floating_point() or out.dim() < 2 or out.shape[1] <= 1:
        return False
    return out.dim() == 2 or out.dim() >= 4


def _resolve_metric(metric: Metric, reference: torch.Tensor,
                    labels: torch.Tensor | None) -> Metric:
    if metric == "auto":
        if labels is not None:
            return "accuracy"
        return "agreement" if _logits_like(reference) else "cosine"
    if metric == "accuracy" and labels is None:
        raise UserInputError("metric 'accuracy' needs labels in the calibration data")
    if metric == "agreement" and not _logits_like(reference):
        raise UserInputError("metric 'agreement' needs a logits output [N, classes, ...]")
    return metric
