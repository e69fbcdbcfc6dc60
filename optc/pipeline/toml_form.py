"""The TOML form of a pipeline.

Either one string in pipeline text::

    pipeline = "fold-constants,fold-batchnorm,eliminate-dead-code"

or one ``[[pass]]`` table per pass, in order, options in its ``options`` sub-table
(keys are option names; TOML arrays fill tuple options)::

    [[pass]]
    name = "fold-constants"
    [pass.options]
    max-bytes = 1048576

    [[pass]]
    name = "eliminate-dead-code"

A target file may embed either form under its own ``[pipeline]`` table and hand that
table to ``pipeline_from_data``.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from optc.pipeline.discovery import PassRegistry
from optc.pipeline.errors import PipelineSyntaxError
from optc.pipeline.manager import Pipeline, parse_pipeline, pipeline_from_specs

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

_PASS_KEYS = frozenset({"name", "options"})


def parse_pipeline_toml(text: str, registry: PassRegistry | None = None) -> Pipeline:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PipelineSyntaxError(f"pipeline TOML: {exc}") from None
    return pipeline_from_data(data, registry)


def load_pipeline_toml(path: str | os.PathLike[str],
                       registry: PassRegistry | None = None) -> Pipeline:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise PipelineSyntaxError(f"{path}: cannot read pipeline file ({exc.strerror})") \
            from None
    try:
        return parse_pipeline_toml(text, registry)
    except PipelineSyntaxError as exc:
        raise PipelineSyntaxError(f"{path}: {exc}") from None


def pipeline_from_data(data: Mapping[str, Any], registry: PassRegistry | None = None,
                       ) -> Pipeline:
    """A pipeline from parsed TOML: a ``pipeline`` string or a ``pass`` array of tables."""
    unknown = sorted(set(data) - {"pipeline", "pass"})
    if unknown:
        raise PipelineSyntaxError(f"pipeline TOML: unknown key(s) {', '.join(unknown)} "
                                  "(expected 'pipeline' or [[pass]] tables)")
    if "pipeline" in data and "pass" in data:
        raise PipelineSyntaxError("pipeline TOML: give either 'pipeline' or [[pass]], not both")
    if "pipeline" in data:
        if not isinstance(data["pipeline"], str):
            raise PipelineSyntaxError("pipeline TOML: 'pipeline' must be a string")
        return parse_pipeline(data["pipeline"], registry)
    tables = data.get("pass", [])
    if not isinstance(tables, list):
        raise PipelineSyntaxError("pipeline TOML: 'pass' must be an array of tables ([[pass]])")
    return pipeline_from_specs([_pass_spec(i, t) for i, t in enumerate(tables)], registry)


def _pass_spec(index: int, table: Any) -> tuple[str, Mapping[str, Any]]:
    where = f"pipeline TOML pass #{index + 1}"
    if not isinstance(table, dict):
        raise PipelineSyntaxError(f"{where}: expected a table")
    unknown = sorted(set(table) - _PASS_KEYS)
    if unknown:
        raise PipelineSyntaxError(f"{where}: unknown key(s) {', '.join(unknown)} "
                                  "(options go in [pass.options])")
    name = table.get("name")
    if not isinstance(name, str):
        raise PipelineSyntaxError(f"{where}: missing 'name'")
    options = table.get("options", {})
    if not isinstance(options, dict):
        raise PipelineSyntaxError(f"{where}: 'options' must be a table")
    return name, options


def pipeline_to_toml(pipeline: Pipeline) -> str:
    """The ``[[pass]]`` form; options equal to their defaults are left out."""
    blocks = []
    for pass_ in pipeline:
        lines = ["[[pass]]", f"name = {json.dumps(pass_.name)}"]
        values = pass_.option_values()
        if values:
            lines.append("[pass.options]")
            lines.extend(f"{key} = {_toml_value(value)}" for key, value in values.items())
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n" if blocks else ""


def _toml_value(value: Any) -> str:
    if isinstance(value, tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if value is None:
        return '"none"'  # TOML has no null; option coercion reads "none" as None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and (math.isinf(value) or math.isnan(value)):
        return ("-" if value < 0 else "") + ("inf" if math.isinf(value) else "nan")
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))
