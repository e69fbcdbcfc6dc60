"""The learned latency model vs its baselines: leave-one-device-out, and the host's real models.

1. Leave-one-device-out on the meta-training dataset (``optc.cost.learned_eval``): for
   each device, meta-train on the others, adapt from K = 10 of its samples, predict the
   rest; Spearman rho and MAPE for the learned model and (a) FLOPs-only, (b) the host
   roofline times one fitted factor, (c) the same network trained from scratch on the
   10 samples, (d) the nearest training device, (e) the learned model's fitted prior
   alone (no network). Two protocols: the 10 fixed reference
   models (HELP's), and 10 random models (medians over ``--draws`` draws).
2. The host: a model meta-trained on *all* devices of the dataset, adapted to each
   device from its 10 reference-model rows, predicts the real models of
   ``host_real_v2.jsonl.gz`` (MiniLM, EfficientNet-Lite0, the digits CNN, onnx's light
   models), which no training file contains. They lie outside the meta-training
   graphs' feature range, where the network's correction gives way to the fitted prior
   (``optc.cost.learned_range``; ``--extrapolation 0`` keeps all of it, on inputs
   clipped to the range).
3. The large models (``wide_v1.jsonl.gz``, 14-200 ms, as ``--test-dataset``): in each
   fold, the held-out device adapted on its reference rows of that collection predicts
   its 20 large models (protocol ``references@wide_v1``). With ``--dataset v2 wide``
   they are meta-trained on instead (the held-out device's rows never).
4. The measurement floor (``--retest``; default the dataset's shipped second
   collection, ``meta_train_v2_retest.jsonl.gz``): the same models measured again in
   another session, scored as if it were a predictor. No method can be judged finer.

    python benchmarks/latency_predictor.py                      # every part
    python benchmarks/latency_predictor.py --draws 3 --members 2 --json out.json
    # the same split over processes (each device's fold is independent), then merged:
    python benchmarks/latency_predictor.py --held-out tvm-1t,tvm-2t --skip-host --json a.json
    python benchmarks/latency_predictor.py --merge a.json b.json ...
    # meta-trained with the large models of wide_v1 too (default: only scored):
    python benchmarks/latency_predictor.py --dataset DATA/meta_train_v2.jsonl.gz \
        DATA/wide_v1.jsonl.gz --test-dataset

Slow parts are cached per user: graph features and host-roofline figures per graph.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from optc.cost import RooflineModel
from optc.cost import latency_baselines as base
from optc.cost.learned import LearnedLatencyModel
from optc.cost.learned_data import Labeled, reference_keys
from optc.cost.learned_eval import (
    SAME_RUNTIME,
    DeviceRows,
    Score,
    dataset_devices,
    dataset_name,
    datasets_devices,
    device_rows,
    evaluate,
    merge_siblings,
    retest_scores,
    score_methods,
    table,
)
from optc.cost.learned_features import PRIOR_MODES, GraphEncoder
from optc.cost.metasgd import MetaConfig
from optc.settings import read_settings
from optc.target import get_target

DATA = Path(__file__).resolve().parents[1] / "optc" / "latency" / "data"
ROOFLINE_CACHE = read_settings().cache_dir / "learned-benchmark-host-roofline.json"


def retest_file(dataset: Path) -> Path | None:
    """The shipped second collection of ``dataset`` (``meta_train_v2_retest`` for
    ``meta_train_v2``), if there is one."""
    found = dataset.with_name(f"{dataset_name(dataset)}_retest.jsonl.gz")
    return found if found.is_file() else None


def host_roofline(devices: dict[str, list[Labeled]]) -> dict[str, float]:
    """The host target's roofline latency per graph key (cached: it needs the graph)."""
    known = json.loads(ROOFLINE_CACHE.read_text()) if ROOFLINE_CACHE.is_file() else {}
    target, model = get_target("host"), RooflineModel()
    missing = {s.key: s for samples in devices.values() for s in samples if s.key not in known}
    for key, sample in missing.items():
        known[key] = model.estimate(sample.load(), target).latency_s
    if missing:
        ROOFLINE_CACHE.parent.mkdir(parents=True, exist_ok=True)
        ROOFLINE_CACHE.write_text(json.dumps(known))
    return known


def host_scores(
    model: LearnedLatencyModel,
    train: dict[str, list[Labeled]],
    real: dict[str, DeviceRows],
    refs: list[str],
    roofline: dict[str, float],
    seed: int,
) -> list[Score]:
    """Each host device: adapt on its reference rows, score on the real models."""
    scores = []
    center = base.roofline_center(
        [
            (
                np.stack([model.encoder.encode_key(s.key, s.load) for s in samples]),
                np.array([s.latency_s for s in samples]),
            )
            for samples in train.values()
        ]
    )
    for device, rows in sorted(real.items()):
        if device not in train:
            continue
        support_rows = [s for s in train[device] if s.key in refs]
        adapted = model.adapt(support_rows, k=len(support_rows), device=device)
        # The baselines see the same 10 rows: stack them before the real models.
        both = DeviceRows(
            support_rows + rows.samples,
            np.concatenate(
                [model.encoder.encode_key(s.key, s.load)[None, :] for s in support_rows]
                + [rows.features]
            ),
            np.concatenate([[roofline[s.key] for s in support_rows], rows.roofline]),
        )
        support = np.arange(len(support_rows))
        test = np.arange(len(support_rows), len(both.samples))
        others = {
            d: {s.key: s.latency_s for s in r.samples}
            | {s.key: s.latency_s for s in train.get(d, [])}
            for d, r in real.items()
            if d != device
        }
        scores += score_methods(
            device, "host-real", both, adapted, support, test, model, others, seed, center
        )
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dataset",
        type=Path,
        nargs="+",
        default=[DATA / "meta_train_v2.jsonl.gz"],
        help="Meta-training datasets (the shipped model's: meta_train_v2); the devices of "
        "the second and later ones are devices of their own, named device@dataset (or, "
        "with --same-runtime, rows of the first one's device), held out with their base "
        "device and scored as the references@dataset protocol.",
    )
    parser.add_argument(
        "--test-dataset",
        type=Path,
        nargs="*",
        default=[DATA / "wide_v1.jsonl.gz"],
        help="Datasets only scored (as references@dataset: adapted on the held-out "
        "device's reference rows there, scored on its other rows), never trained on.",
    )
    parser.add_argument("--host", type=Path, default=DATA / "host_real_v2.jsonl.gz")
    parser.add_argument(
        "--retest",
        type=Path,
        help="A second collection of the first dataset's models (another session): "
        "scored as the 'retest' column, the measurement's own floor on each device "
        "(default: NAME_retest.jsonl.gz beside the first dataset, where there is one).",
    )
    parser.add_argument(
        "--same-runtime",
        default=",".join(SAME_RUNTIME),
        metavar="DEVICES",
        help="Devices whose rows from the later datasets train as rows of the first "
        "dataset's device (the same latency function); the others train as "
        "device@dataset. Empty: none.",
    )
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--draws", type=int, default=5)
    parser.add_argument("--members", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=MetaConfig().iterations)
    parser.add_argument(
        "--bound",
        type=float,
        default=MetaConfig().bound,
        help="Largest graph-dependent ln-correction to the roofline.",
    )
    parser.add_argument(
        "--prior",
        choices=PRIOR_MODES,
        default=MetaConfig().prior,
        help="What the network corrects (MetaConfig.prior).",
    )
    parser.add_argument(
        "--extrapolation",
        type=float,
        default=MetaConfig().extrapolation,
        help="Scale (training standard deviations) over which the network's correction "
        "gives way to the fitted prior outside the training range; 0: kept everywhere.",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--latency",
        choices=("median", "min"),
        default="median",
        help="Train and score on the median (latency_s) or fastest run (min_s).",
    )
    parser.add_argument("--skip-lodo", action="store_true")
    parser.add_argument("--skip-host", action="store_true")
    parser.add_argument(
        "--held-out",
        default="",
        metavar="DEVICES",
        help="Comma-separated devices to hold out (default: every one); a run split over "
        "processes, its --json files merged by --merge.",
    )
    parser.add_argument(
        "--merge", type=Path, nargs="+", help="Print the table of these --json files only."
    )
    parser.add_argument("--json", type=Path, help="Write every score here.")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.merge:
        print(table([Score(**s) for path in args.merge for s in json.loads(path.read_text())]))
        return
    torch.set_num_threads(1)  # tiny matrices: threads cost more than they give
    config = dataclasses.replace(
        MetaConfig(),
        iterations=args.iterations,
        bound=args.bound,
        prior=args.prior,
        extrapolation=args.extrapolation,
    )
    encoder = GraphEncoder()
    devices = datasets_devices([*args.dataset, *args.test_dataset], encoder, args.latency)
    untrained = {
        d for d in devices if any(d.endswith("@" + dataset_name(p)) for p in args.test_dataset)
    }
    same_runtime = [d for d in args.same_runtime.split(",") if d]
    roofline = host_roofline(devices)
    refs = list(reference_keys(devices))
    rows = device_rows(devices, encoder, roofline=lambda s: roofline[s.key])
    scores: list[Score] = []
    started = time.perf_counter()
    if not args.skip_lodo:
        scores += evaluate(
            rows,
            refs,
            k=args.k,
            draws=args.draws,
            seed=args.seed,
            members=args.members,
            config=config,
            encoder=encoder,
            held_out=[d for d in args.held_out.split(",") if d] or None,
            untrained=untrained,
            same_runtime=same_runtime,
        )
    retest = args.retest or retest_file(args.dataset[0])
    if retest is not None:
        scores += retest_scores(devices, dataset_devices(retest, encoder, args.latency), refs)
    if args.host.is_file() and not args.skip_host:
        real_devices = dataset_devices(args.host, encoder, args.latency)
        roofline.update(host_roofline(real_devices))
        real = device_rows(real_devices, encoder, roofline=lambda s: roofline[s.key])
        model = LearnedLatencyModel(
            pretrained=False, seed=args.seed, members=args.members, config=config, encoder=encoder
        ).fit(
            merge_siblings(
                {d: s for d, s in devices.items() if d not in untrained}, same_runtime, refs
            )
        )
        scores += host_scores(model, devices, real, refs, roofline, args.seed)
    print(table(scores))
    print(
        f"\n{time.perf_counter() - started:.0f} s; K = {args.k}, draws = {args.draws}, "
        f"members = {args.members}, iterations = {args.iterations}, "
        f"latency = {args.latency}, prior = {args.prior}, "
        f"extrapolation = {args.extrapolation}; same runtime: {args.same_runtime or '-'}; "
        "trained on "
        f"{', '.join(dataset_name(p) for p in args.dataset)}"
        + (
            f", scored on {', '.join(dataset_name(p) for p in args.test_dataset)}"
            if args.test_dataset
            else ""
        )
    )
    if args.json:
        args.json.write_text(json.dumps([dataclasses.asdict(s) for s in scores], indent=1))


if __name__ == "__main__":
    main()
