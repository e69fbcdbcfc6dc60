"""The learned model's fitted prior (per-device group weights and per-node cost, NNLS) on
optc's collected latency data, and model files written before it existed."""

# ruff: noqa: F811 (the shared fixtures of learned_support are parameters here)

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from learned_support import DATASET, collected, encoder  # noqa: F401 (fixtures)
from scipy.stats import spearmanr

from optc.cost import latency_baselines as base
from optc.cost.learned import LearnedLatencyModel
from optc.cost.learned_data import Labeled, reference_keys
from optc.cost.learned_features import (
    PRIOR_GROUPS,
    PRIOR_INDEX,
    GraphEncoder,
    fit_prior,
    prior_columns,
)
from optc.cost.metasgd import MetaConfig
from optc.latency.dataset import load_dataset


def _device(
    collected: dict[str, list[Labeled]],
    encoder: GraphEncoder,
    device: str,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features, latencies and a reference-row mask of one device."""
    samples = collected[device]
    refs = set(reference_keys(collected))
    features = np.stack([encoder.encode_key(s.key, s.load) for s in samples])
    return (
        features,
        np.array([s.latency_s for s in samples]),
        np.array([s.key in refs for s in samples]),
    )


def test_columns_add_up_to_the_roofline(
    collected: dict[str, list[Labeled]], encoder: GraphEncoder
) -> None:
    features, _, _ = _device(collected, encoder, "tvm-1t")
    columns = prior_columns(features)
    assert columns.shape == (len(features), len(PRIOR_GROUPS) + 1)
    # The groups partition the op classes: their busy times are the whole roofline.
    np.testing.assert_allclose(
        columns[:, :-1].sum(axis=1), np.exp(features[:, PRIOR_INDEX]), rtol=1e-6
    )
    assert np.all(columns[:, -1] >= 1)  # every graph has nodes


def test_fit_recovers_weights_of_an_exact_combination(
    collected: dict[str, list[Labeled]], encoder: GraphEncoder
) -> None:
    features, _, is_ref = _device(collected, encoder, "tvm-1t")
    columns = prior_columns(features[is_ref])
    truth = np.array([3.0, 0.5, 2.0, 2e-5])  # conv slow, matmul fast, 20 us per node
    fitted = fit_prior(columns, columns @ truth)
    np.testing.assert_allclose(fitted, truth, rtol=1e-6)


def test_absent_group_gets_the_typical_weight(
    collected: dict[str, list[Labeled]], encoder: GraphEncoder
) -> None:
    features, _, _ = _device(collected, encoder, "tvm-1t")
    columns = prior_columns(features)
    no_conv = columns[columns[:, 0] == 0][:10]
    assert len(no_conv) == 10
    fitted = fit_prior(no_conv, no_conv @ np.array([0.0, 1.5, 2.5, 0.0]))
    # Ten samples without a convolution say nothing about convolutions: not free.
    assert fitted[0] == pytest.approx(np.mean(fitted[1:3]))


def test_fitted_prior_ranks_eager_torch_better_than_roofline(
    collected: dict[str, list[Labeled]], encoder: GraphEncoder
) -> None:
    features, latency, is_ref = _device(collected, encoder, "torch-1t")
    support = np.flatnonzero(is_ref)
    fitted = base.fitted_prior(features, latency, support)
    rho_fitted = spearmanr(fitted[~is_ref], latency[~is_ref])[0]
    rho_roofline = spearmanr(np.exp(features[~is_ref, PRIOR_INDEX]), latency[~is_ref])[0]
    # Measured on the shipped data: 0.91 vs 0.81 (eager torch pays ~per node).
    assert rho_fitted > rho_roofline + 0.05, (rho_fitted, rho_roofline)
    assert rho_fitted > 0.88


def test_files_without_a_prior_keep_the_roofline(
    collected: dict[str, list[Labeled]], encoder: GraphEncoder, tmp_path: Path
) -> None:
    train = {d: s[:60] for d, s in collected.items() if d in ("tvm-1t", "ort-1t")}
    config = MetaConfig(hidden=8, iterations=5, prior="roofline")
    model = LearnedLatencyModel(pretrained=False, members=1, config=config, encoder=encoder).fit(
        train
    )
    path = model.save(tmp_path / "old.pt")
    document = torch.load(path, weights_only=True)
    del document["config"]["prior"], document["prior_weights"]  # as format 1 files were
    torch.save(document, path)
    loaded = LearnedLatencyModel(path, encoder=encoder)
    assert loaded.config.prior == "roofline" and loaded.state is not None
    assert loaded.state.prior_weights is None
    features, _, _ = _device(collected, encoder, "tvm-1t")
    np.testing.assert_array_equal(
        loaded.predict_features(features[:5])[0], model.predict_features(features[:5])[0]
    )


def test_adapted_to_unseen_eager_device_keeps_the_fitted_prior_ranking(
    collected: dict[str, list[Labeled]], encoder: GraphEncoder
) -> None:
    """torch-1t is unlike every other device (per-node cost): adapted from its 10
    reference rows, the model ranks the rest at least about as well as the fitted prior
    alone (leave-one-out picks how much network correction to keep)."""
    train = {d: s for d, s in collected.items() if d != "torch-1t"}
    model = LearnedLatencyModel(
        pretrained=False, members=1, encoder=encoder, config=MetaConfig(hidden=16, iterations=40)
    ).fit(train)
    features, latency, is_ref = _device(collected, encoder, "torch-1t")
    samples = collected["torch-1t"]
    adapted = model.adapt(
        [s for s, r in zip(samples, is_ref, strict=True) if r], k=10, device="torch-1t"
    )
    state = adapted.state
    assert state is not None and state.prior_weights is not None
    assert state.shrink in (0.0, 0.5, 1.0) and state.prior_weights[-1] > 0  # per-node cost
    predicted, spread = adapted.predict_features(features[~is_ref])
    fitted = base.fitted_prior(features, latency, np.flatnonzero(is_ref))[~is_ref]
    rho = spearmanr(predicted, latency[~is_ref])[0]
    assert rho > spearmanr(fitted, latency[~is_ref])[0] - 0.03 and rho > 0.87, rho
    assert np.all(spread > 0)


def test_dataset_devices_reads_the_fastest_run(encoder: GraphEncoder) -> None:
    from optc.cost.learned_eval import dataset_devices
    from optc.errors import UserInputError

    rows = {(s.device, s.graph_hash): s for s in load_dataset(DATASET)}
    fastest = dataset_devices(DATASET, encoder, "min")
    sample = fastest["ort-1t"][0]
    assert sample.latency_s == rows[("ort-1t", sample.key)].min_s
    assert sample.latency_s < rows[("ort-1t", sample.key)].latency_s
    with pytest.raises(UserInputError, match="median"):
        dataset_devices(DATASET, encoder, "p90")
