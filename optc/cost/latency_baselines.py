"""Baselines the learned latency model must beat, each fit on the same K measured samples.

(a) FLOPs only: ``ln(latency) = a + b ln(FLOPs)`` by least squares;
(b) roofline only: a roofline prediction times one fitted factor (the geometric mean of
    measured / predicted), so ranking is the roofline's own;
(c) scratch: the learned model's network trained on the K samples alone, no meta-learning;
(d) nearest device: the training device whose latencies rank the K samples most like the
    new device does; its latencies, times one fitted factor, are the prediction (it needs
    the candidates measured on that device: a lookup table, not a model of graphs);
(e) fitted prior: the learned model's prior alone (roofline busy time per op-class group
    and a per-node cost, weighted by non-negative least squares on the K samples), so
    that what the meta-learned correction adds on top of it is visible.

Each takes row indices of the support set and returns predictions for every row.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from scipy.stats import spearmanr

from optc.cost import metasgd
from optc.cost.learned_features import (
    FEATURE_NAMES,
    PRIOR_INDEX,
    fit_prior,
    prior_columns,
    prior_log,
)
from optc.cost.learned_state import LearnedState

FLOPS_INDEX = FEATURE_NAMES.index("ln_flops")


def flops_only(features: np.ndarray, latency: np.ndarray, support: np.ndarray) -> np.ndarray:
    x, y = features[support, FLOPS_INDEX], np.log(latency[support])
    if np.ptp(x) == 0:  # one FLOP count in the support: only a level can be fit
        return np.full(len(features), float(np.exp(y.mean())))
    slope, intercept = np.polyfit(x, y, 1)
    return np.exp(intercept + slope * features[:, FLOPS_INDEX])


def scaled(prediction: np.ndarray, latency: np.ndarray, support: np.ndarray) -> np.ndarray:
    """``prediction`` times the geometric-mean factor that fits the support rows."""
    factor = np.exp(np.mean(np.log(latency[support]) - np.log(prediction[support])))
    return prediction * factor


def roofline_only(roofline: np.ndarray, latency: np.ndarray, support: np.ndarray) -> np.ndarray:
    return scaled(roofline, latency, support)


def fitted_prior(
    features: np.ndarray, latency: np.ndarray, support: np.ndarray, depthwise: bool = False
) -> np.ndarray:
    columns = prior_columns(features, depthwise=depthwise)
    return np.exp(prior_log(columns, fit_prior(columns[support], latency[support])))


def roofline_center(devices: Sequence[tuple[np.ndarray, np.ndarray]]) -> float:
    """Mean ln(latency / nominal roofline) over the training devices' (features, latency)
    rows: the residual centring the scratch baseline has always used."""
    return float(
        np.mean(
            np.concatenate(
                [np.log(latency) - features[:, PRIOR_INDEX] for features, latency in devices]
            )
        )
    )


def scratch(
    features: np.ndarray,
    latency: np.ndarray,
    support: np.ndarray,
    state: LearnedState,
    seed: int,
    center: float,
) -> np.ndarray:
    """The meta-learned network's architecture, trained on the support rows only, as a
    correction to the nominal roofline (the feature scaling comes from the training
    devices, the residual centring ``center`` from ``roofline_center`` of them: neither
    holds a latency of the new device). It does not use the learned model's fitted prior,
    so that it stays the baseline it was."""
    x = np.clip((features - state.x_mean) / state.x_std, -4.0, 4.0)
    y = np.log(latency) - features[:, PRIOR_INDEX] - center
    xt = torch.as_tensor(x, dtype=torch.float32)
    with metasgd.one_thread():
        params = metasgd.fit_scratch(
            xt[support],
            torch.as_tensor(y[support], dtype=torch.float32),
            state.space.size,
            state.config,
            seed,
        )
    with torch.no_grad():
        out = metasgd.forward(params, xt, torch.zeros(state.space.size), state.config.bound).numpy()
    return np.exp(features[:, PRIOR_INDEX] + center + out)


def nearest_device(
    keys: Sequence[str],
    latency: np.ndarray,
    support: np.ndarray,
    others: Mapping[str, Mapping[str, float]],
) -> tuple[str, np.ndarray]:
    """The best-agreeing training device and its scaled latencies for every row."""
    best, best_rho = "", -2.0
    for device, table in sorted(others.items()):
        if not all(keys[i] in table for i in support):
            continue
        rho = spearmanr([table[keys[i]] for i in support], latency[support])[0]
        if np.isfinite(rho) and rho > best_rho:
            best, best_rho = device, float(rho)
    if not best:
        raise ValueError("no training device measured all the support models")
    table = others[best]
    borrowed = np.array([table.get(k, np.nan) for k in keys])
    return best, scaled(borrowed, latency, support)
