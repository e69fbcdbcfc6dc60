"""Leave-one-device-out evaluation of the learned latency model against its baselines.

For each device of a dataset: meta-train on the others, then adapt from K of the held-out
device's samples and predict the rest. Two ways of choosing the K samples:

- ``references`` (HELP's protocol): the K samples are the fixed reference models, which
  also give the device's embedding; every method gets exactly these measurements;
- ``random``: K random non-reference models, medians over ``draws`` draws; the learned
  model then has no reference latencies and uses the training devices' mean embedding.

Scored on the device's remaining non-reference models: Spearman's rho and MAPE.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from optc.cost import latency_baselines as base
from optc.cost.learned import LearnedLatencyModel
from optc.cost.learned_data import Labeled, labeled_all
from optc.cost.learned_features import (
    ENCODER_VERSION,
    PACKAGED_FEATURES,
    PRIOR_INDEX,
    GraphEncoder,
)
from optc.cost.metasgd import MetaConfig
from optc.errors import UserInputError
from optc.settings import read_settings

log = logging.getLogger(__name__)

METHODS = ("learned", "flops", "roofline", "scratch", "nearest", "fitted")


@dataclasses.dataclass(frozen=True)
class Score:
    device: str
    protocol: str
    method: str
    rho: float
    mape: float
    detail: str = ""


def score(predicted: np.ndarray, measured: np.ndarray) -> tuple[float, float]:
    rho = float(spearmanr(predicted, measured)[0])
    return rho, float(np.mean(np.abs(predicted - measured) / measured))


@dataclasses.dataclass
class DeviceRows:
    """One device's samples with features and a roofline prediction per row."""

    samples: list[Labeled]
    features: np.ndarray
    roofline: np.ndarray

    @property
    def keys(self) -> list[str]:
        return [s.key for s in self.samples]

    @property
    def latency(self) -> np.ndarray:
        return np.array([s.latency_s for s in self.samples])


def device_rows(
    devices: Mapping[str, Sequence[Labeled]],
    encoder: GraphEncoder,
    roofline: Callable[[Labeled], float] | None = None,
) -> dict[str, DeviceRows]:
    """Features (and the roofline prediction, default: the encoder's prior) per device."""
    rows = {}
    for device, samples in devices.items():
        features = np.stack([encoder.encode_key(s.key, s.load) for s in samples])
        prior = (
            np.array([roofline(s) for s in samples])
            if roofline
            else np.exp(features[:, PRIOR_INDEX])
        )
        rows[device] = DeviceRows(list(samples), features, prior)
    return rows


def evaluate(
    rows: Mapping[str, DeviceRows],
    reference_keys: Sequence[str],
    *,
    k: int = 10,
    draws: int = 5,
    seed: int = 0,
    members: int = 3,
    config: MetaConfig | None = None,
    encoder: GraphEncoder | None = None,
    held_out: Sequence[str] | None = None,
) -> list[Score]:
    """Leave-one-device-out scores of every method on every device (see module doc), or
    on the ``held_out`` ones only (each still trains on all the others: a run can be
    split across processes)."""
    scores: list[Score] = []
    refs = set(reference_keys)
    unknown = sorted(set(held_out or ()) - set(rows))
    if unknown:
        raise UserInputError(f"no such device in the dataset: {', '.join(unknown)}")
    for held in sorted(held_out or rows):
        train = {d: r.samples for d, r in rows.items() if d != held}
        model = LearnedLatencyModel(
            pretrained=False, seed=seed, members=members, config=config, encoder=encoder
        ).fit(train)
        data = rows[held]
        is_ref = np.array([key in refs for key in data.keys])
        others = {
            d: dict(zip(r.keys, r.latency, strict=True)) for d, r in rows.items() if d != held
        }
        support = np.flatnonzero(is_ref)[:k]
        center = base.roofline_center(
            [(r.features, r.latency) for d, r in rows.items() if d != held]
        )
        scores += _one(held, "references", data, support, ~is_ref, model, others, seed, center)
        pool = np.flatnonzero(~is_ref)
        rng = np.random.default_rng(seed)
        drawn = []
        for draw in range(draws):
            support = rng.choice(pool, size=min(k, pool.size - 2), replace=False)
            test = ~is_ref
            test[support] = False
            drawn += _one(held, "random", data, support, test, model, others, seed + draw, center)
        scores += _medians(drawn)
        log.info("held out %s: done", held)
    return scores


def _one(
    device: str,
    protocol: str,
    data: DeviceRows,
    support: np.ndarray,
    test: np.ndarray,
    model: LearnedLatencyModel,
    others: Mapping[str, Mapping[str, float]],
    seed: int,
    center: float,
) -> list[Score]:
    adapted = model.adapt([data.samples[i] for i in support], k=len(support), device=device)
    return score_methods(
        device, protocol, data, adapted, support, test, model, others, seed, center
    )


def score_methods(
    device: str,
    protocol: str,
    data: DeviceRows,
    adapted: LearnedLatencyModel,
    support: np.ndarray,
    test: np.ndarray,
    model: LearnedLatencyModel,
    others: Mapping[str, Mapping[str, float]],
    seed: int,
    center: float,
) -> list[Score]:
    """Every method of ``METHODS`` fitted on the ``support`` rows of ``data`` (the learned
    one already ``adapted`` on them), scored on its ``test`` rows. Rows a baseline cannot
    predict (the nearest device lacks the model) are left out of that baseline's score."""
    measured = data.latency
    nearest, borrowed = base.nearest_device(data.keys, measured, support, others)
    predictions = {
        "learned": adapted.predict_features(data.features)[0],
        "flops": base.flops_only(data.features, measured, support),
        "roofline": base.roofline_only(data.roofline, measured, support),
        "scratch": base.scratch(data.features, measured, support, model.state, seed, center),
        "nearest": borrowed,
        "fitted": base.fitted_prior(
            data.features,
            measured,
            support,
            depthwise=adapted.config.prior == "fitted-depthwise",
        ),
    }
    scores = []
    for method in METHODS:
        predicted = predictions[method][test]
        ok = np.isfinite(predicted)
        rho, mape = score(predicted[ok], measured[test][ok])
        scores.append(
            Score(device, protocol, method, rho, mape, nearest if method == "nearest" else "")
        )
    return scores


def _medians(drawn: list[Score]) -> list[Score]:
    merged = []
    for method in METHODS:
        mine = [s for s in drawn if s.method == method]
        if mine:
            merged.append(
                dataclasses.replace(
                    mine[0],
                    rho=float(np.median([s.rho for s in mine])),
                    mape=float(np.median([s.mape for s in mine])),
                    detail=",".join(sorted({s.detail for s in mine if s.detail})),
                )
            )
    return merged


def table(scores: Sequence[Score]) -> str:
    """A markdown table: one row per device and protocol, rho / MAPE per method."""
    head = "| device | protocol | " + " | ".join(f"{m} rho / MAPE" for m in METHODS) + " |"
    lines = [head, "|" + "---|" * (2 + len(METHODS))]
    keys = sorted({(s.device, s.protocol) for s in scores})
    for device, protocol in keys:
        cells = {s.method: s for s in scores if (s.device, s.protocol) == (device, protocol)}
        lines.append(
            f"| {device} | {protocol} | "
            + " | ".join(
                f"{cells[m].rho:.3f} / {100 * cells[m].mape:.1f}%" if m in cells else "n/a"
                for m in METHODS
            )
            + " |"
        )
    for protocol in sorted({s.protocol for s in scores}):
        mean = {m: [s for s in scores if s.protocol == protocol and s.method == m] for m in METHODS}
        lines.append(
            f"| **mean** | {protocol} | "
            + " | ".join(
                f"{np.mean([s.rho for s in v]):.3f} / {100 * np.mean([s.mape for s in v]):.1f}%"
                for v in mean.values()
            )
            + " |"
        )
    return "\n".join(lines)


def feature_cache() -> Path:
    """Where graph features of dataset rows are kept between runs (per encoder version)."""
    return read_settings().cache_dir / f"learned-features-v{ENCODER_VERSION}.npz"


def dataset_devices(
    path: Path, encoder: GraphEncoder, latency: str = "median"
) -> dict[str, list[Labeled]]:
    """A dataset's samples by device, with the encoder's cache filled from and saved to
    ``feature_cache()`` (building a generated graph takes about a second). ``latency``:
    ``median`` (``latency_s``) or ``min`` (``min_s``, the fastest run, where a row has
    it: the least disturbed figure on a shared machine)."""
    from optc.latency.dataset import by_device, load_dataset

    if latency not in ("median", "min"):
        raise UserInputError(f"latency must be 'median' or 'min', not {latency!r}")
    samples = load_dataset(path)
    if latency == "min":
        samples = [dataclasses.replace(s, latency_s=s.min_s) if s.min_s else s for s in samples]
    devices = {d: labeled_all(s) for d, s in by_device(samples).items()}
    cache = feature_cache()
    encoder.load_cache(PACKAGED_FEATURES)
    before = encoder.load_cache(cache)
    for samples in devices.values():
        for sample in samples:
            encoder.encode_key(sample.key, sample.load)
    if len(encoder) > before:
        encoder.save_cache(cache)
    return devices
