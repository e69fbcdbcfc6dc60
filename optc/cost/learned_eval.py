"""Leave-one-device-out evaluation of the learned latency model against its baselines.

For each device of a dataset: meta-train on the others, then adapt from K of the held-out
device's samples and predict the rest. Two ways of choosing the K samples:

- ``references`` (HELP's protocol): the K samples are the fixed reference models, which
  also give the device's embedding; every method gets exactly these measurements;
- ``random``: K random non-reference models, medians over ``draws`` draws; the learned
  model then has no reference latencies and uses the training devices' mean embedding.

Scored on the device's remaining non-reference models: Spearman's rho and MAPE.

Several datasets can be combined (``datasets_devices``): the devices of every dataset
after the first are named ``device@dataset`` (``wide_v1``'s ``tvm-2t`` becomes
``tvm-2t@wide_v1``), each a training device of its own with its own reference-model
embedding, because the same runtime measured another day (with other schedules) is
another latency function. Holding out a device holds out all its ``@`` siblings too
(the same runtime must not be in training when it is the one to predict), and each
sibling is scored as a protocol of its own, ``references@dataset``: adapted on the
sibling's reference rows, scored on its other rows.

Where a later collection measured the *same* latency function (same runtime and
settings, reference rows within noise of the first collection's), its rows can instead
join the first collection's device in training (``merge_siblings``; ``same_runtime``
names those devices): one task whose episodes then see small and large models under one
embedding, so that the correction learns how the device's latency departs from a prior
fitted on the small reference models as models grow. They are still scored apart, as the
``references@dataset`` protocol.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Collection, Mapping, Sequence
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
RETEST = "retest"
"""The measurement floor's column (``retest_scores``): not a method, a second measurement."""
SIBLING = "@"
"""Separates a device's name from the dataset it came from (``tvm-2t@wide_v1``)."""
SAME_RUNTIME = ("ort-1t", "ort-2t", "ort-int8-1t", "torch-1t")
"""The devices of optc's shipped datasets whose later collection (``wide_v1``) measured
the same latency function as ``meta_train_v1``: onnxruntime and eager torch, reference
rows new / v1 1.02-1.11 (median per device). Not TVM: optc's own schedules got faster
in between (0.87-0.90; 0.42-1.35 per model), so ``tvm-*@wide_v1`` are devices of their
own. Against ``meta_train_v2`` (100 runs per model, TVM's pool pinned) ``wide_v1``'s
reference rows are 1.08-1.21 on these devices (10 runs per model there: the first runs
after warm-up are the slow ones) and 1.00-1.01 on TVM's; which devices to merge is an
option (``--same-runtime``), measured with ``meta_train_v1`` in docs/benchmarks.md."""


def base_device(device: str) -> str:
    """The device a (possibly ``@``-suffixed) dataset device name stands for."""
    return device.split(SIBLING, 1)[0]


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


def training_devices(
    devices: Collection[str], held: str, untrained: Collection[str] = ()
) -> list[str]:
    """The devices to meta-train on when ``held`` is held out: not it, not any of its
    ``@`` siblings (the same runtime from another collection), not the ``untrained``."""
    return [d for d in devices if base_device(d) != base_device(held) and d not in untrained]


def merge_siblings(
    devices: Mapping[str, Sequence[Labeled]],
    same_runtime: Collection[str],
    reference_keys: Collection[str],
) -> dict[str, list[Labeled]]:
    """``devices`` with every ``device@dataset`` whose base device is in ``same_runtime``
    (and present) folded into that device: its rows other than the reference models (the
    first collection's give the embedding). The rest are kept as they are."""
    refs = set(reference_keys)
    merged = {d: list(s) for d, s in devices.items()}
    for device, samples in devices.items():
        base_name = base_device(device)
        if device != base_name and base_name in same_runtime and base_name in merged:
            merged[base_name] += [s for s in samples if s.key not in refs]
            del merged[device]
    return merged


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
    untrained: Collection[str] = (),
    same_runtime: Collection[str] = (),
) -> list[Score]:
    """Leave-one-device-out scores of every method on every device (see module doc), or
    on the ``held_out`` ones only (each still trains on all the others: a run can be
    split across processes). Devices named ``device@dataset`` are held out with their
    base device and scored as its ``references@dataset`` protocol; the ``untrained``
    ones are never trained on, only scored that way (a test set); those of a base device
    in ``same_runtime`` are trained on as rows of that device (``merge_siblings``)."""
    scores: list[Score] = []
    refs = set(reference_keys)
    unknown = sorted(set(held_out or ()) - set(rows))
    if unknown:
        raise UserInputError(f"no such device in the dataset: {', '.join(unknown)}")
    for held in sorted(held_out or [d for d in rows if SIBLING not in d]):
        kept = training_devices(rows, held, untrained)
        model = LearnedLatencyModel(
            pretrained=False, seed=seed, members=members, config=config, encoder=encoder
        ).fit(merge_siblings({d: rows[d].samples for d in kept}, same_runtime, refs))
        data = rows[held]
        is_ref = np.array([key in refs for key in data.keys])
        others = {d: dict(zip(rows[d].keys, rows[d].latency, strict=True)) for d in kept}
        support = np.flatnonzero(is_ref)[:k]
        center = base.roofline_center([(rows[d].features, rows[d].latency) for d in kept])
        scores += _one(held, "references", data, support, ~is_ref, model, others, seed, center)
        for sibling in sorted(d for d in rows if d != held and base_device(d) == held):
            extra = rows[sibling]
            is_extra_ref = np.array([key in refs for key in extra.keys])
            scores += _one(
                held,
                "references" + sibling[len(held) :],
                extra,
                np.flatnonzero(is_extra_ref)[:k],
                ~is_extra_ref,
                model,
                others,
                seed,
                center,
            )
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
    # The nearest device must have measured the rows to predict (a collection of large
    # models cannot stand in for one of small ones), where any training device has.
    covering = {d: t for d, t in others.items() if all(k in t for k in data.keys)}
    nearest, borrowed = base.nearest_device(data.keys, measured, support, covering or others)
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


def retest_scores(
    devices: Mapping[str, Sequence[Labeled]],
    retest: Mapping[str, Sequence[Labeled]],
    reference_keys: Collection[str],
) -> list[Score]:
    """The measurement's own floor, per device: a second collection of the same models
    (``retest``, another session) taken as the prediction of the first, on the
    non-reference models both have. No predictor can be judged finer than this: it is
    what re-measuring disagrees with measuring (method ``RETEST``, protocol
    ``references``)."""
    refs = set(reference_keys)
    scores = []
    for device, samples in devices.items():
        again = {s.key: s.latency_s for s in retest.get(device, ())}
        pairs = [
            (again[s.key], s.latency_s) for s in samples if s.key in again and s.key not in refs
        ]
        if len(pairs) < 3:
            continue
        predicted, measured = (np.array(v) for v in zip(*pairs, strict=True))
        rho, mape = score(predicted, measured)
        scores.append(Score(device, "references", RETEST, rho, mape, f"{len(pairs)} models"))
    return scores


def table(scores: Sequence[Score]) -> str:
    """A markdown table: one row per device and protocol, rho / MAPE per method (the
    retest floor last, where there is one)."""
    methods = METHODS + ((RETEST,) if any(s.method == RETEST for s in scores) else ())
    head = "| device | protocol | " + " | ".join(f"{m} rho / MAPE" for m in methods) + " |"
    lines = [head, "|" + "---|" * (2 + len(methods))]
    keys = sorted({(s.device, s.protocol) for s in scores})
    for device, protocol in keys:
        cells = {s.method: s for s in scores if (s.device, s.protocol) == (device, protocol)}
        lines.append(
            f"| {device} | {protocol} | "
            + " | ".join(
                f"{cells[m].rho:.3f} / {100 * cells[m].mape:.1f}%" if m in cells else "n/a"
                for m in methods
            )
            + " |"
        )
    for protocol in sorted({s.protocol for s in scores}):
        mean = {m: [s for s in scores if s.protocol == protocol and s.method == m] for m in methods}
        lines.append(
            f"| **mean** | {protocol} | "
            + " | ".join(
                f"{np.mean([s.rho for s in v]):.3f} / {100 * np.mean([s.mape for s in v]):.1f}%"
                if v
                else "n/a"
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


def dataset_name(path: Path) -> str:
    """A dataset file's name without its extensions (``wide_v1.jsonl.gz`` -> ``wide_v1``)."""
    return path.name.split(".", 1)[0]


def datasets_devices(
    paths: Sequence[Path], encoder: GraphEncoder, latency: str = "median"
) -> dict[str, list[Labeled]]:
    """Several datasets' samples by device: the first dataset's devices under their own
    names, every later one's as ``device@dataset`` (see the module doc)."""
    devices: dict[str, list[Labeled]] = {}
    for i, path in enumerate(paths):
        suffix = "" if i == 0 else SIBLING + dataset_name(path)
        for device, samples in dataset_devices(path, encoder, latency).items():
            devices[device + suffix] = samples
    return devices
