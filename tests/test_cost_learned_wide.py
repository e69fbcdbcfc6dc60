"""Meta-training on several datasets: the large-model supplement ``wide_v1`` next to v1."""

# ruff: noqa: F811 (the shared fixtures of learned_support are parameters here)

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from learned_support import DATASET, collected, encoder, labeled_devices  # noqa: F401 (fixtures)

from optc.cost.learned import LearnedLatencyModel
from optc.cost.learned_data import Labeled, reference_keys
from optc.cost.learned_eval import (
    SAME_RUNTIME,
    base_device,
    dataset_name,
    datasets_devices,
    merge_siblings,
    training_devices,
)
from optc.cost.learned_features import PACKAGED_FEATURES, GraphEncoder
from optc.cost.metasgd import MetaConfig
from optc.ir.graph import Graph

WIDE = DATASET.with_name("wide_v1.jsonl.gz")
FULL = MetaConfig()
"""The default network and iterations: the smaller settings of the other tests do not
learn the large models' correction (measured on held-out ``tvm-2t``, MAPE v1 only ->
with wide_v1: 100 iterations 43 -> 46 %, hidden 32 and 400 iterations 41 -> 32 %,
default 43 -> 8 %; about 20 s per fit)."""


@pytest.fixture(scope="module")
def wide(encoder: GraphEncoder) -> dict[str, list[Labeled]]:
    """``wide_v1``'s devices as a second dataset's: ``device@wide_v1``."""
    return {f"{d}@wide_v1": s for d, s in labeled_devices(WIDE).items()}


def test_later_datasets_are_devices_of_their_own(encoder: GraphEncoder) -> None:
    devices = datasets_devices([DATASET, WIDE], encoder)
    assert dataset_name(Path("x/wide_v1.jsonl.gz")) == "wide_v1"
    assert sorted(devices) == sorted(
        [*(d for d in devices if "@" not in d), *(f"{d}@wide_v1" for d in devices if "@" not in d)]
    )
    assert len(devices) == 12 and len(devices["tvm-2t@wide_v1"]) == 30
    assert len(devices["tvm-2t"]) == 210
    # The shipped features cover both datasets: no graph has to be built to train.
    shipped = GraphEncoder()
    shipped.load_cache(PACKAGED_FEATURES)

    def unbuilt() -> Graph:
        raise AssertionError("a graph of the datasets is not in the shipped features")

    for samples in devices.values():
        for sample in samples:
            shipped.encode_key(sample.key, unbuilt)
    # The two collections of one runtime are different latency functions (TVM's
    # schedules got faster in between): the same reference model, other latencies.
    first = {s.key: s.latency_s for s in devices["tvm-2t"]}
    second = {s.key: s.latency_s for s in devices["tvm-2t@wide_v1"]}
    refs = reference_keys(devices)
    assert all(k in first and k in second for k in refs)
    assert any(abs(first[k] / second[k] - 1) > 0.1 for k in refs)


def test_holding_out_a_device_holds_out_its_siblings() -> None:
    names = ["tvm-1t", "tvm-2t", "tvm-1t@wide_v1", "tvm-2t@wide_v1", "ort-1t@extra"]
    assert base_device("tvm-2t@wide_v1") == "tvm-2t" and base_device("tvm-2t") == "tvm-2t"
    assert training_devices(names, "tvm-2t") == ["tvm-1t", "tvm-1t@wide_v1", "ort-1t@extra"]
    assert training_devices(names, "tvm-2t@wide_v1") == training_devices(names, "tvm-2t")
    assert training_devices(names, "tvm-1t", untrained=["ort-1t@extra"]) == [
        "tvm-2t",
        "tvm-2t@wide_v1",
    ]


def test_same_runtime_rows_join_their_device(
    collected: dict[str, list[Labeled]], wide: dict[str, list[Labeled]]
) -> None:
    everything = {**collected, **wide}
    refs = reference_keys(collected)
    merged = merge_siblings(everything, SAME_RUNTIME, refs)
    # onnxruntime and torch: one device each, v1's rows then wide_v1's 20 large models
    # (its reference rows dropped: v1's give the embedding); TVM stays two devices.
    assert sorted(merged) == sorted([*collected, "tvm-1t@wide_v1", "tvm-2t@wide_v1"])
    for device in SAME_RUNTIME:
        assert len(merged[device]) == 230
        assert merged[device][:210] == collected[device]
        assert not {s.key for s in merged[device][210:]} & set(refs)
    assert merged["tvm-2t"] == collected["tvm-2t"] and len(merged["tvm-2t@wide_v1"]) == 30
    # A sibling without its base device (held out) is not merged anywhere.
    held = {d: s for d, s in everything.items() if d != "ort-1t"}
    assert "ort-1t@wide_v1" in merge_siblings(held, SAME_RUNTIME, refs)


def test_large_models_in_training_help_predict_large_models(
    collected: dict[str, list[Labeled]],
    wide: dict[str, list[Labeled]],
    encoder: GraphEncoder,
) -> None:
    """Adapted on the held-out device's 10 reference rows of the wide collection, the
    model meta-trained with the other devices' large models (onnxruntime's and torch's
    as rows of their v1 devices) predicts its 20 large ones better than the one trained
    on v1 alone. On ``ort-2t`` (held out with its own wide rows) that holds for every
    seed measured (one member, MAPE v1 only -> with wide_v1: seed 0 29.6 -> 22.6 %, seed
    1 28.3 -> 17.4 %; benchmark, 3 members: 28.8 -> 17.3 / 19.1 %); on ``tvm-2t`` it
    does not (seed 0 43 -> 8 %, seed 1 41 -> 50 %), which is why the shipped model is
    not trained this way (docs/latency-dataset.md)."""
    held = "ort-2t"
    everything = {**collected, **wide}
    refs = set(reference_keys(collected))
    target = wide[f"{held}@wide_v1"]
    support = [s for s in target if s.key in refs]
    test = [s for s in target if s.key not in refs]
    features = np.stack([encoder.encode_key(s.key, s.load) for s in test])
    measured = np.array([s.latency_s for s in test])

    def mape(train: list[str]) -> float:
        chosen = {d: everything[d] for d in train}
        model = LearnedLatencyModel(
            pretrained=False, seed=0, members=1, config=FULL, encoder=encoder
        ).fit(merge_siblings(chosen, SAME_RUNTIME, refs))
        predicted, _ = model.adapt(support, k=10, device=held).predict_features(features)
        return float(np.mean(np.abs(predicted - measured) / measured))

    v1_only = mape(training_devices(collected, held))
    with_wide = mape(training_devices(everything, held))
    assert len(support) == 10 and len(test) == 20
    assert with_wide < 0.85 * v1_only, (with_wide, v1_only)
