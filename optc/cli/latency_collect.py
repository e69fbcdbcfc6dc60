"""``optc latency collect``: measure generated (and real) models on devices into a dataset."""

from __future__ import annotations

from pathlib import Path

import click

from optc.cli.compile import rpc_options
from optc.cli.failures import EXIT_CODES_HELP

DEFAULT_DEVICES = "tvm-1t,tvm-2t,ort-1t,ort-2t,torch-1t,ort-int8-1t"


@click.command("collect", epilog=EXIT_CODES_HELP)
@click.option("--devices", default=DEFAULT_DEVICES, show_default=True, metavar="LIST",
              help="Comma-separated devices: tvm-1t, tvm-2t, ort-1t, ort-2t, torch-1t, "
                   "torch-2t, ort-int8-1t, rpc:<key> (with --rpc-tracker/--rpc-key).")
@click.option("--models", "count", default=100, show_default=True, type=click.IntRange(0),
              metavar="N", help="Generated architectures to measure (after the reference set).")
@click.option("--wide", "wide_count", default=0, show_default=True, type=click.IntRange(0),
              metavar="N", help="Also N generated 'wide' models (AlexNet/VGG-sized convolutions "
                                "and fully connected layers, 20-800 ms on the host), the size "
                                "of the large real CNNs that the ordinary families do not reach.")
@click.option("--seed", default=0, show_default=True, help="Seed of the architecture sampler.")
@click.option("--reference/--no-reference", default=True, show_default=True,
              help="Measure the 10 fixed reference models (the device embedding) first.")
@click.option("--zoo", "zoo_names", default="", metavar="LIST",
              help="Comma-separated real models (minilm, efficientnet-lite0, digits-cnn, "
                   "light-<name>): the held-out evaluation, keep them out of training files.")
@click.option("--onnx", "onnx_files", multiple=True, type=click.Path(exists=True,
                                                                     dir_okay=False),
              help="An ONNX file (static shapes) to measure as well; repeatable.")
@click.option("--repeat", default=20, show_default=True, type=click.IntRange(1), metavar="R",
              help="Timed runs per model and device (after warm-up); median and p90 kept.")
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Dataset file (.jsonl or .jsonl.gz); rows already in it are skipped.")
@rpc_options
@click.option("--rpc-target", default="host", show_default=True, metavar="NAME",
              help="The optc target a remote device's code is compiled for.")
def command(devices: str, count: int, wide_count: int, seed: int, reference: bool,
            zoo_names: str, onnx_files: tuple[str, ...], repeat: int, out: Path,
            rpc_tracker: str | None, rpc_key: str | None, rpc_target: str) -> None:
    """Measure models on devices into the latency dataset OUT (resumable).

    Each model is compiled and timed on every device in turn; the file is rewritten
    atomically after each model, so an interrupted run continues where it stopped
    when the same command is given again. Format: docs/latency-dataset.md.
    """
    from optc.compiler.rpc import rpc_from_options
    from optc.errors import UnknownNameError
    from optc.latency.arch import reference_specs, sample_large_specs, sample_specs
    from optc.latency.collect import Model, collect
    from optc.latency.devices import make_devices
    from optc.latency.models import ZOO_MODELS

    zoo = [name.strip() for name in zoo_names.split(",") if name.strip()]
    unknown = [name for name in zoo if name not in ZOO_MODELS]
    if unknown:  # checked before any measurement, not after an hour of them
        raise UnknownNameError(f"unknown zoo model {unknown[0]!r} (known: "
                               f"{', '.join(ZOO_MODELS)})")
    names = [name.strip() for name in devices.split(",") if name.strip()]
    chosen = make_devices(names, rpc=rpc_from_options(rpc_tracker, rpc_key),
                          rpc_target=rpc_target)
    models: list[Model] = [*(reference_specs() if reference else []), *sample_specs(count, seed)]
    models += sample_large_specs(wide_count, seed) if wide_count else []
    models += [f"zoo:{name}" for name in zoo]
    models += list(onnx_files)
    samples = collect(models, chosen, out, repeat, progress=lambda text: click.echo(text,
                                                                                    err=True))
    click.echo(f"{out}: {len(samples)} samples, {len({s.model for s in samples})} models, "
               f"{len({s.device for s in samples})} devices")
