"""Output for the commands: rich tables on a terminal, plain aligned text elsewhere, JSON.

Plain text is what pipes, files and tests see: no colour, no box drawing, no wrapping,
so ``optc show model.onnx | grep Conv`` works. ``--json`` documents go to stdout
alone; logs and errors always go to stderr.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from typing import Any

import click

from optc.ir.graph import Shape, Value

Row = Sequence[object]


def is_terminal() -> bool:
    """True when stdout is an interactive terminal (rich's own detection)."""
    from rich.console import Console  # deferred: rich is only needed on terminals

    return Console(file=sys.stdout).is_terminal


def print_json(document: Any) -> None:
    """One JSON document on stdout."""
    click.echo(json.dumps(document, indent=2, allow_nan=False))


def print_table(title: str, columns: Sequence[str], rows: Sequence[Row]) -> None:
    """A titled table: rich on a terminal, plain aligned columns otherwise."""
    if is_terminal():
        _rich_table(title, columns, rows)
    else:
        click.echo(plain_table(title, columns, rows))


def print_fields(title: str, fields: Sequence[tuple[str, object]]) -> None:
    """``key  value`` lines: a two-column table without a header on terminals too."""
    if is_terminal():
        _rich_table(title, ("", ""), fields, show_header=False)
    else:
        click.echo(plain_table(title, None, fields))


def plain_table(title: str, columns: Sequence[str] | None, rows: Sequence[Row]) -> str:
    """Left-aligned columns separated by two spaces; the header row when ``columns``."""
    cells = [[str(c) for c in row] for row in rows]
    if columns is not None:
        cells.insert(0, list(columns))
    widths = [max(len(row[i]) for row in cells if i < len(row))
              for i in range(max((len(r) for r in cells), default=0))]
    lines = [title] if title else []
    for row in cells:
        text = "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row))
        lines.append("  " + text.rstrip())
    return "\n".join(lines)


def _rich_table(title: str, columns: Sequence[str], rows: Sequence[Row],
                show_header: bool = True) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title or None, title_justify="left", show_header=show_header)
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(str(cell) for cell in row))
    Console(file=sys.stdout).print(table)


# -- human-readable quantities -------------------------------------------------------

def human_bytes(count: int) -> str:
    """``10380`` -> ``"10.1 KiB"`` (binary units)."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{count} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def human_rate(value: float, unit: str) -> str:
    """``5.3e12, "FLOP/s"`` -> ``"5.3 TFLOP/s"`` (decimal SI prefixes)."""
    if value == 0 or not math.isfinite(value):
        return f"{value:g} {unit}"
    exponent = min(max(math.floor(math.log10(abs(value)) / 3), 0), 5)
    prefix = ("", "k", "M", "G", "T", "P")[exponent]
    return f"{value / 10 ** (3 * exponent):.4g} {prefix}{unit}"


def human_seconds(value: float) -> str:
    """``5e-6`` -> ``"5 µs"``."""
    for scale, unit in ((1.0, "s"), (1e-3, "ms"), (1e-6, "µs")):
        if abs(value) >= scale:
            return f"{value / scale:.4g} {unit}"
    return f"{value / 1e-9:.4g} ns"


def shape_text(shape: Shape) -> str:
    """``[1,3,N,?]``; ``?`` for an unknown dimension, ``[?...]`` for an unknown rank."""
    if shape is None:
        return "[?...]"
    return "[" + ",".join("?" if d is None else str(d) for d in shape) + "]"


def value_text(value: Value) -> str:
    """``float32[1,3,224,224]``."""
    return f"{value.dtype or '?'}{shape_text(value.shape)}"
