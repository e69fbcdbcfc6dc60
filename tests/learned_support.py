"""Shared fixtures of the learned-latency-model tests: the shipped dataset, read with the
shipped graph features (building each generated graph again takes seconds;
``test_packaged_features_are_current`` checks that the shipped ones are what the encoder
computes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from optc.cost.learned_data import Labeled, labeled_all
from optc.cost.learned_features import PACKAGED_FEATURES, GraphEncoder
from optc.latency.dataset import by_device, load_dataset

DATASET = (
    Path(__file__).resolve().parents[1] / "optc" / "latency" / "data" / "meta_train_v2.jsonl.gz"
)


@pytest.fixture(scope="module")
def encoder() -> GraphEncoder:
    """An encoder holding the shipped features of the dataset's graphs."""
    encoder = GraphEncoder()
    encoder.load_cache(PACKAGED_FEATURES)
    return encoder


def labeled_devices(path: Path) -> dict[str, list[Labeled]]:
    """A shipped dataset's samples by device (features from the shipped cache)."""
    return {d: labeled_all(s) for d, s in by_device(load_dataset(path)).items()}


@pytest.fixture(scope="module")
def collected(encoder: GraphEncoder) -> dict[str, list[Labeled]]:
    """Every device's samples; their features come from the shipped cache."""
    return labeled_devices(DATASET)
