"""Where the learned latency model's network may be trusted: the meta-training feature range.

The network learns a log-latency correction to the fitted prior from the meta-training
graphs. Past their range (a real ResNet-50 has 4x the work of the largest training model,
so every size-like feature lies beyond it) a ReLU network extrapolates linearly, and the
correction it learned for "larger" models keeps growing: on the host's real models the
shipped v2 model predicted ResNet-50 2.6x too slow on TVM where the fitted prior alone
was closer. Two guards, both computed from the features alone:

- the network sees each standardized feature clipped to the range it had in training
  (``FeatureRange.clip``): beyond it, the correction is the one at the edge, as a tree
  model's would be;
- a graph's *distance* from that range (``FeatureRange.distance``: the largest excess of
  any standardized feature over its training range, in training standard deviations)
  shrinks the correction toward the fitted prior by ``trust(distance) = exp(-distance /
  scale)`` and raises the uncertainty the search reads (``MetaConfig.extrapolation``).

Graphs inside the range (every graph of the meta-training set, hence every
leave-one-device-out prediction) are untouched: distance 0, trust 1, clip a no-op.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class FeatureRange:
    """Per-feature low and high of the standardized training features (before the
    network's clip to +-4 standard deviations, so that a training graph is inside)."""

    low: np.ndarray
    high: np.ndarray

    @classmethod
    def of(cls, standardized: np.ndarray) -> FeatureRange:
        rows = np.atleast_2d(standardized)
        return cls(rows.min(axis=0), rows.max(axis=0))

    def clip(self, standardized: np.ndarray) -> np.ndarray:
        return np.clip(standardized, self.low, self.high)

    def distance(self, standardized: np.ndarray) -> np.ndarray:
        """Per row, the largest excess of any feature over its range (0 inside it)."""
        rows = np.atleast_2d(standardized)
        excess = np.maximum(rows - self.high, 0.0) + np.maximum(self.low - rows, 0.0)
        return excess.max(axis=1) if excess.shape[1] else np.zeros(len(rows))


def trust(distance: np.ndarray, scale: float) -> np.ndarray:
    """Share of the network's correction kept at ``distance`` from the training range;
    ``scale <= 0`` keeps all of it (the guard off)."""
    if scale <= 0:
        return np.ones_like(np.asarray(distance, dtype=np.float64))
    return np.exp(-np.asarray(distance, dtype=np.float64) / scale)
