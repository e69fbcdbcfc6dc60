"""``optc targets``: the installed targets and their figures; ``--calibrate`` measures."""

from __future__ import annotations

from typing import Any

import click

from optc.cli import render
from optc.cli.failures import EXIT_CODES_HELP
from optc.errors import UserInputError
from optc.target import MEASURED, Figure, Target, get_target, load_targets


@click.command("targets", epilog=EXIT_CODES_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document: name -> target.")
@click.option("--calibrate", "calibrate", metavar="NAME",
              help="Run NAME's micro-benchmark now (the host: a few seconds), cache the "
                   "figures, and show that target.")
@click.option("--quick", is_flag=True, help="With --calibrate: smaller problems, rougher figures.")
@click.option("--fit", is_flag=True,
              help="With --calibrate host: also measure generated models with optc's own "
                   "build (~3-6 minutes; --quick: ~1) and fit the roofline's per-op "
                   "efficiencies and achieved bandwidth to them.")
def command(as_json: bool, calibrate: str | None, quick: bool, fit: bool) -> None:
    """List installed targets: TVM target, peaks, bandwidth, launch overhead, dtypes.

    A figure shown as "measured" is pending: the target's micro-benchmark supplies
    it on first use (or now, with --calibrate).
    """
    if quick and not calibrate:
        raise click.UsageError("--quick only applies with --calibrate")
    if fit and not calibrate:
        raise click.UsageError("--fit only applies with --calibrate host")
    targets = load_targets()
    if calibrate:
        targets = {calibrate: calibrate_now(calibrate, targets, quick)}
        if fit:
            targets = {calibrate: fit_now(targets[calibrate], quick, quiet=as_json)}
    if as_json:
        render.print_json({name: target_document(t) for name, t in targets.items()})
        return
    for index, target in enumerate(targets.values()):
        if index:
            click.echo()
        render.print_fields(f"{target.name}: {target.description}", target_fields(target))


def calibrate_now(name: str, targets: dict[str, Target], quick: bool) -> Target:
    target = get_target(name, targets, calibrate=False)
    if not target.calibration:
        raise UserInputError(f"target {name!r} has no micro-benchmark; its figures come "
                             f"from {target.path}")
    from optc.cost.calibration import calibrate_target  # deferred: imports torch

    return calibrate_target(target, quick=quick, force=True)


def fit_now(target: Target, quick: bool, quiet: bool) -> Target:
    """Fit ``target``'s roofline to generated models measured here (host only)."""
    if target.calibration != "host-cpu":
        raise UserInputError(f"--fit measures this machine: it applies to 'host', not "
                             f"{target.name!r}")
    from optc.cost import host_fit  # deferred: imports TVM and torch

    wide, ordinary = host_fit.QUICK if quick else host_fit.FULL

    def progress(text: str) -> None:
        if not quiet:
            click.echo(text, err=True)

    report = host_fit.fit_here(wide, ordinary, progress=progress)
    if not quiet:
        click.echo(f"fitted on {report.models} generated models in {report.seconds:.0f} s; "
                   f"their roofline MAPE {report.mape_at_peak:.1f}% at the measured peaks "
                   f"-> {report.mape_fitted:.1f}% fitted", err=True)
    return get_target(target.name)


def target_document(target: Target) -> dict[str, Any]:
    """A target as JSON; pending figures stay the string "measured"."""
    fallback = target.fallback
    return {
        "name": target.name,
        "description": target.description,
        "tvm_target": target.tvm_target_dict,
        "tvm_tag": target.tvm_tag,
        "tvm_byoc": target.tvm_byoc,
        "host_triple": target.host_triple,
        "cross_compiler": target.cross_compiler,
        "peak_flops": dict(target.peak_flops),
        "peak_flops_sparse": dict(target.peak_flops_sparse),
        "memory_bandwidth": target.memory_bandwidth,
        "launch_overhead": target.launch_overhead,
        "cache": None if target.cache_size is None else {
            "size": target.cache_size, "bandwidth": target.cache_bandwidth},
        "supported_dtypes": list(target.supported_dtypes),
        "supported_ops": None if target.supported_ops is None else sorted(target.supported_ops),
        "fallback": None if fallback is None else {
            "description": fallback.description, "peak_flops": dict(fallback.peak_flops),
            "memory_bandwidth": fallback.memory_bandwidth,
            "launch_overhead": fallback.launch_overhead,
            "link_bandwidth": fallback.link_bandwidth, "link_latency": fallback.link_latency},
        "efficiency": dict(target.efficiency),
        "calibration": target.calibration,
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
    if target.tvm_byoc:
        fields.append(("tvm byoc", target.tvm_byoc))
    fields += [(f"peak {dtype}", _figure(v, _ops_unit(dtype)))
               for dtype, v in target.peak_flops.items()]
    fields += [(f"peak {dtype} (sparse)", _figure(v, _ops_unit(dtype)))
               for dtype, v in target.peak_flops_sparse.items()]
    fields += [
        ("memory bandwidth", _figure(target.memory_bandwidth, "B/s")),
        ("launch overhead", _figure(target.launch_overhead, "s")),
    ]
    if target.cache_size is not None and target.cache_bandwidth is not None:
        fields += [("cache size", _figure(target.cache_size, "B")),
                   ("cache bandwidth", _figure(target.cache_bandwidth, "B/s"))]
    fields.append(("dtypes", ", ".join(target.supported_dtypes)))
    if target.supported_ops is not None:
        fields.append(("ops", ", ".join(sorted(target.supported_ops))))
    fields += _fallback_fields(target)
    if target.efficiency:
        fields.append(("efficiency", ", ".join(f"{k} {v:.2f}"
                                               for k, v in target.efficiency.items())))
    if target.calibration:
        fields.append(("calibration", target.calibration))
    fields += [
        ("default pipeline", target.default_pipeline),
        ("file", f"{target.path} ({target.distribution or 'unknown distribution'})"),
    ]
    return fields


def _fallback_fields(target: Target) -> list[tuple[str, str]]:
    fallback = target.fallback
    if fallback is None:
        return []
    fields = [("fallback", fallback.description)]
    fields += [(f"fallback peak {dtype}", _figure(v, _ops_unit(dtype)))
               for dtype, v in fallback.peak_flops.items()]
    fields += [
        ("fallback memory bandwidth", _figure(fallback.memory_bandwidth, "B/s")),
        ("fallback launch overhead", _figure(fallback.launch_overhead, "s")),
        ("link bandwidth", _figure(fallback.link_bandwidth, "B/s")),
        ("link latency", _figure(fallback.link_latency, "s")),
    ]
    return fields


def _ops_unit(dtype: str) -> str:
    return "FLOP/s" if "float" in dtype else "OP/s"


def _figure(value: Figure, unit: str) -> str:
    if value == MEASURED:
        return "measured (pending)"
    if unit == "s":
        return render.human_seconds(float(value))
    if unit == "B":
        return render.human_bytes(int(value))
    return render.human_rate(float(value), unit)
