"""``optc passes``: installed passes (built-ins and plugins) and their options."""

from __future__ import annotations

import math
from typing import Any

import click

from optc.cli import render
from optc.cli.failures import EXIT_CODES_HELP
from optc.pipeline import OptionSpec, available_pass_plugins
from optc.pipeline.options import format_value
from optc.plugins import Plugin


@click.command("passes", epilog=EXIT_CODES_HELP)
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON document: a list of passes with their options.")
def command(as_json: bool) -> None:
    """List installed passes: name, exact or lossy, distribution, summary and options.

    Options are written in pipeline text as name{option=value other=a,b}.
    """
    documents = [pass_document(plugin) for plugin in available_pass_plugins().values()]
    if as_json:
        render.print_json(documents)
        return
    rows = [(d["name"], "exact" if d["exact"] else "lossy", d["distribution"], d["summary"])
            for d in documents]
    render.print_table("passes", ("name", "kind", "distribution", "summary"), rows)
    for doc in documents:
        if doc["options"]:
            click.echo()
            rows = [(o["name"], o["type"], o["default_text"], o["help"]) for o in doc["options"]]
            render.print_table(f"options of {doc['name']}", ("option", "type", "default", "help"),
                               rows)


def pass_document(plugin: Plugin) -> dict[str, Any]:
    """One pass as JSON: its class variables, docstring summary and options."""
    cls = plugin.obj
    return {
        "name": plugin.name,
        "exact": bool(cls.exact),
        "distribution": plugin.distribution,
        "builtin": plugin.builtin,
        "entry_point": plugin.value,
        "summary": cls.summary(),
        "requires": list(cls.requires),
        "options": [option_document(spec) for spec in cls.options()],
    }


def option_document(spec: OptionSpec) -> dict[str, Any]:
    return {
        "name": spec.name,
        "type": spec.type_text(),
        "required": spec.required,
        "default": None if spec.required else _json_value(spec.default),
        "default_text": "(required)" if spec.required else format_value(spec.default),
        "help": spec.help,
    }


def _json_value(value: Any) -> Any:
    """JSON has no tuples, infinities or NaN: lists, and the pipeline text for the others."""
    if isinstance(value, tuple | list):
        return [_json_value(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return format_value(value)
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return format_value(value)
