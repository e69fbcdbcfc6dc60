"""``optc measure OUT``: time an existing artifact here or on a remote device."""

from __future__ import annotations

from pathlib import Path

import click

from optc.cli import render
from optc.cli.compile import measured_text, repeat_option, rpc_options
from optc.cli.failures import EXIT_CODES_HELP


@click.command("measure", epilog=EXIT_CODES_HELP)
@click.argument("artifact", type=click.Path(path_type=Path))
@rpc_options
@repeat_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def command(artifact: Path, rpc_tracker: str | None, rpc_key: str | None, repeat: int,
            as_json: bool) -> None:
    """Time the artifact folder ARTIFACT (written by `optc compile`).

    Every file is checked against the manifest's SHA-256 before the library is
    loaded. Runs here, or on a device behind --rpc-tracker / --rpc-key.
    """
    from optc.compiler import measure_artifact
    from optc.compiler.rpc import rpc_from_options

    document = measure_artifact(artifact, rpc=rpc_from_options(rpc_tracker, rpc_key),
                                repeat=repeat)
    if as_json:
        render.print_json(document)
        return
    predicted = document["predicted_s"]
    at_compile = document["measured_at_compile_s"]
    render.print_fields(f"{artifact} ({document['model']} for "
                        f"{document['target'] or document['tvm_target'].get('kind')})", [
        ("measured", measured_text(document["measured"])),
        ("predicted", "-" if predicted is None else render.human_seconds(predicted)),
        ("at compile", "-" if at_compile is None else render.human_seconds(at_compile)),
    ])
