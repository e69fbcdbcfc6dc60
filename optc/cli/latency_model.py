"""``optc latency train|adapt|eval``: the learned latency model from a latency dataset.

Three click commands (``train_command``, ``adapt_command``, ``eval_command``) for the
``optc latency`` group; each is a thin call into ``optc.cost.learned``.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import click

from optc.cli.failures import EXIT_CODES_HELP
from optc.cost.metasgd import MetaConfig
from optc.errors import UserInputError

K_HELP = "Measured samples to adapt from (reference models first)."


def _config(iterations: int | None) -> MetaConfig:
    return MetaConfig() if iterations is None else MetaConfig(iterations=iterations)


_datasets_argument = click.argument(
    "datasets",
    nargs=-1,
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
)
_same_runtime_option = click.option(
    "--same-runtime",
    default=None,
    metavar="DEVICES",
    help="Comma-separated devices whose rows in the later DATASETS train as rows of the "
    "first one's device (the same latency function) rather than as device@dataset "
    "(default: onnxruntime and torch, learned_eval.SAME_RUNTIME; '' for none).",
)


@click.command("train", epilog=EXIT_CODES_HELP)
@_datasets_argument
@click.option(
    "-o",
    "--out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Model file to write (.pt).",
)
@click.option(
    "--adapt-device",
    default="",
    metavar="DEVICE",
    help="Also adapt the model to this device of the dataset (its reference rows).",
)
@click.option("--k", default=10, show_default=True, type=click.IntRange(1), help=K_HELP)
@click.option(
    "--seed", default=0, show_default=True, help="Seed of training (same seed, same model)."
)
@click.option(
    "--members",
    default=3,
    show_default=True,
    type=click.IntRange(1),
    help="Ensemble members (their spread is the uncertainty).",
)
@click.option(
    "--iterations",
    type=click.IntRange(1),
    default=None,
    help="Meta-training iterations (default: MetaConfig's).",
)
@_same_runtime_option
def train_command(
    datasets: tuple[Path, ...],
    out: Path,
    adapt_device: str,
    k: int,
    seed: int,
    members: int,
    iterations: int | None,
    same_runtime: str | None,
) -> None:
    """Meta-train the learned latency model on every device of the DATASETS.

    The devices of the second and later datasets are training devices of their own,
    named ``device@dataset`` (``tvm-2t@wide_v1``, with its own reference-model
    embedding), except those of ``--same-runtime``: their rows join the first dataset's
    device of that name (the same latency function measured again).
    """
    from optc.cost.learned import LearnedLatencyModel
    from optc.cost.learned_data import reference_keys
    from optc.cost.learned_eval import datasets_devices, merge_siblings
    from optc.cost.learned_features import GraphEncoder

    encoder = GraphEncoder()
    found = datasets_devices(datasets, encoder)
    devices = merge_siblings(found, _same_runtime(same_runtime), reference_keys(found))
    model = LearnedLatencyModel(
        pretrained=False, seed=seed, members=members, config=_config(iterations), encoder=encoder
    ).fit(devices)
    if adapt_device:
        if adapt_device not in devices:
            raise UserInputError(
                f"device {adapt_device!r} is not in the datasets "
                f"(it has: {', '.join(sorted(devices))})"
            )
        model = model.adapt(devices[adapt_device], k=k, device=adapt_device)
    model.save(out)
    click.echo(
        f"{out}: trained on {', '.join(sorted(devices))}"
        + (f", adapted to {adapt_device}" if adapt_device else "")
    )


@click.command("adapt", epilog=EXIT_CODES_HELP)
@click.argument("model_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("samples", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--device", required=True, help="The device's name (a dataset's device column).")
@click.option(
    "-o",
    "--out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Adapted model file to write.",
)
@click.option("--k", default=10, show_default=True, type=click.IntRange(1), help=K_HELP)
def adapt_command(model_file: Path, samples: Path, device: str, out: Path, k: int) -> None:
    """Adapt MODEL_FILE to a device from SAMPLES measured on it.

    SAMPLES is a latency dataset (its rows for --device) or a CSV file with columns
    ``onnx,latency_s`` (ONNX paths relative to the CSV). Include the reference models
    (``optc latency collect --reference``) for the device embedding.
    """
    from optc.cost.learned import LearnedLatencyModel
    from optc.cost.learned_eval import feature_cache
    from optc.cost.learned_features import PACKAGED_FEATURES, GraphEncoder

    rows = _samples(samples, device)
    encoder = GraphEncoder()  # dataset rows: features shipped or cached, not rebuilt
    encoder.load_cache(PACKAGED_FEATURES)
    encoder.load_cache(feature_cache())
    model = LearnedLatencyModel(model_file, encoder=encoder).adapt(rows, k=k, device=device)
    model.save(out)
    click.echo(f"{out}: adapted to {device} from {min(k, len(rows))} of {len(rows)} samples")


@click.command("eval", epilog=EXIT_CODES_HELP)
@_datasets_argument
@click.option("--k", default=10, show_default=True, type=click.IntRange(2), help=K_HELP)
@click.option(
    "--draws",
    default=5,
    show_default=True,
    type=click.IntRange(1),
    help="Random draws of the K samples (medians reported).",
)
@click.option("--seed", default=0, show_default=True)
@click.option("--members", default=3, show_default=True, type=click.IntRange(1))
@click.option("--iterations", type=click.IntRange(1), default=None)
@click.option("--json", "as_json", is_flag=True, help="Print the scores as JSON.")
@_same_runtime_option
def eval_command(
    datasets: tuple[Path, ...],
    k: int,
    draws: int,
    seed: int,
    members: int,
    iterations: int | None,
    as_json: bool,
    same_runtime: str | None,
) -> None:
    """Leave-one-device-out: Spearman rho and MAPE of the learned model and baselines,
    over the devices of the first of the DATASETS (later ones' devices train as
    ``device@dataset``, or as rows of their base device with ``--same-runtime``, and are
    scored as their base device's ``references@dataset``)."""
    import dataclasses

    from optc.cost.learned_data import reference_keys
    from optc.cost.learned_eval import datasets_devices, device_rows, evaluate, table
    from optc.cost.learned_features import GraphEncoder

    encoder = GraphEncoder()
    devices = datasets_devices(datasets, encoder)
    scores = evaluate(
        device_rows(devices, encoder),
        reference_keys(devices),
        k=k,
        draws=draws,
        seed=seed,
        members=members,
        config=_config(iterations),
        encoder=encoder,
        same_runtime=_same_runtime(same_runtime),
    )
    if as_json:
        click.echo(json.dumps([dataclasses.asdict(s) for s in scores], indent=1))
    else:
        click.echo(table(scores))


def _same_runtime(option: str | None) -> tuple[str, ...]:
    from optc.cost.learned_eval import SAME_RUNTIME

    return SAME_RUNTIME if option is None else tuple(d for d in option.split(",") if d)


def _samples(path: Path, device: str) -> list[object]:
    if path.suffix.lower() == ".csv":
        return _csv_samples(path)
    from optc.latency.dataset import by_device, load_dataset

    groups = by_device(load_dataset(path))
    if device not in groups:
        raise UserInputError(
            f"{path} has no rows for device {device!r} (it has: {', '.join(sorted(groups))})"
        )
    return list(groups[device])


def _csv_samples(path: Path) -> list[object]:
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or not {"onnx", "latency_s"} <= set(reader.fieldnames):
            raise UserInputError(f"{path}: a samples CSV needs the columns onnx,latency_s")
        return [(path.parent / row["onnx"], row["latency_s"]) for row in reader]
