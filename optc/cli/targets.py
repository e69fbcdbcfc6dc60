"""``optc targets``: the installed targets and their figures."""

from __future__ import annotations

from typing import Any

import click

from optc.cli import render
from optc.cli.failures import EXIT_CODES_HELP
from optc.target import MEASURED, Figure, Target, load_targets


@click.command("targets", epilog=EXIT_CODES_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document: name -> target.")
def command(as_json: bool) -> None:
    """List installed targets: TVM target, peaks, bandwidth, launch overhead, dtypes.

    A figure shown as "measured" is pending: the target's micro-benchmark supplies it.
    """
    targets = load_targets()
    if as_json:
        render.print_json({name: target_document(t) for name, t in targets.items()})
        return
    for index, target in enumerate(targets.values()):
        if index:
            click.echo()
        render.print_fields(f"{target.name}: {target.description}", target_fields(target))


def target_document(target: Target) -> dict[str, Any]:
    """A target as JSON; pending figures stay the string "measured"."""
    return {
        "name": target.name,
        "description": target.description,
        "tvm_target": target.tvm_target_dict,
        "tvm_tag": target.tvm_tag,
        "host_triple": target.host_triple,
        "cross_compiler": target.cross_compiler,
        "peak_flops": dict(target.peak_flops),
        "peak_flops_sparse": dict(target.peak_flops_sparse),
        "memory_bandwidth": target.memory_bandwidth,
        "launch_overhead": target.launch_overhead,
        "supported_dtypes": list(target.supported_dtypes),
        "default_pipeline": target.default_pipeline,
        "sources": dict(target.sources),
        "pending": list(target.pending_figures()),
        "path": str(target.path),
        "distribution": target.distribution,
    }


def target_fields(target: Target) -> list[tuple[str, str]]:
    fields = [
        ("tvm target", target.tvm_target_json),
        ("tvm tag", target.tvm_tag or "-"),
        ("host triple", target.host_triple or "this machine"),
        ("cross compiler", target.cross_compiler or "none (native)"),
    ]
    fields += [(f"peak {dtype}", _figure(v, _ops_unit(dtype)))
               for dtype, v in target.peak_flops.items()]
    fields += [(f"peak {dtype} (sparse)", _figure(v, _ops_unit(dtype)))
               for dtype, v in target.peak_flops_sparse.items()]
    fields += [
        ("memory bandwidth", _figure(target.memory_bandwidth, "B/s")),
        ("launch overhead", _figure(target.launch_overhead, "s")),
        ("dtypes", ", ".join(target.supported_dtypes)),
        ("default pipeline", target.default_pipeline),
        ("file", f"{target.path} ({target.distribution or 'unknown distribution'})"),
    ]
    return fields


def _ops_unit(dtype: str) -> str:
    return "FLOP/s" if "float" in dtype else "OP/s"


def _figure(value: Figure, unit: str) -> str:
    if value == MEASURED:
        return "measured (pending)"
    if unit == "s":
        return render.human_seconds(float(value))
    return render.human_rate(float(value), unit)
