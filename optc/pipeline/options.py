"""Pass options: the dataclass fields of a pass, their types, and value conversion.

A field ``max_bytes: int`` is the option ``max-bytes``. Values arrive as text from
the pipeline grammar (``bits=4,8``) or as TOML values (``bits = [4, 8]``) and are
converted to the field's type hint: ``int``, ``float``, ``bool``, ``str``,
``Literal[...]``, ``X | None`` and tuples of those (``tuple[int, ...]``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import types
import typing
from typing import Any, Literal, Union

from optc.pipeline.errors import PipelineSyntaxError

_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")
_NONE = ("none", "null")
BARE_TEXT = re.compile(r"[A-Za-z0-9_.+\-/:@%*]+\Z")
"""Strings printed without quotes in pipeline text."""


class QuotedText(str):
    """Text that was quoted in the pipeline: ``"none"`` stays a string, never ``None``."""


@dataclasses.dataclass(frozen=True)
class OptionSpec:
    """One option of a pass: its kebab-case ``name``, dataclass ``field``, type and help."""

    name: str
    field: str
    hint: Any
    default: Any
    help: str

    @property
    def required(self) -> bool:
        return self.default is dataclasses.MISSING

    def type_text(self) -> str:
        return type_text(self.hint)


def option_name(field_name: str) -> str:
    return field_name.replace("_", "-")


def collect_options(cls: type) -> tuple[OptionSpec, ...]:
    """The options of a dataclass pass; raises ``TypeError`` saying what is wrong."""
    hints = typing.get_type_hints(cls)
    specs = []
    for field in dataclasses.fields(cls):
        help_text = field.metadata.get("help", "")
        if not isinstance(help_text, str) or not help_text.strip():
            raise TypeError(f"option {field.name!r} has no help text "
                            '(use dataclasses.field(metadata={"help": "..."}))')
        hint = hints[field.name]
        check_supported(hint, field.name)
        default = field.default
        if field.default_factory is not dataclasses.MISSING:
            default = field.default_factory()
        specs.append(OptionSpec(option_name(field.name), field.name, hint, default, help_text))
    return tuple(specs)


def check_supported(hint: Any, where: str) -> None:
    origin = typing.get_origin(hint)
    if hint in (int, float, bool, str) or origin is Literal:
        return
    if _is_union(hint):
        for arg in typing.get_args(hint):
            if arg is not type(None):
                check_supported(arg, where)
        return
    if origin is tuple:
        for arg in typing.get_args(hint):
            if arg is not Ellipsis:
                check_supported(arg, where)
        return
    raise TypeError(f"option {where!r} has type {type_text(hint)}, which pipeline text "
                    "cannot express (use int, float, bool, str, Literal, tuples of those)")


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (Union, types.UnionType)


def type_text(hint: Any) -> str:
    if isinstance(hint, type):
        return hint.__name__
    return str(hint).replace("typing.", "")


# -- conversion ------------------------------------------------------------------------

def coerce(hint: Any, value: Any, where: str) -> Any:
    """Convert text or a TOML value to ``hint``; ``PipelineSyntaxError`` if it does not fit."""
    try:
        return _coerce(hint, value)
    except (ValueError, TypeError) as exc:
        raise PipelineSyntaxError(f"{where}: {exc}") from None


def _coerce(hint: Any, value: Any) -> Any:
    origin = typing.get_origin(hint)
    if _is_union(hint):
        return _coerce_union(hint, value)
    if origin is Literal:
        return _coerce_literal(hint, value)
    if origin is tuple:
        return _coerce_tuple(hint, value)
    if isinstance(value, list | tuple):
        raise ValueError(f"expected one {type_text(hint)}, got a list of {len(value)}")
    if hint is bool:
        return _coerce_bool(value)
    if hint is int:
        return _coerce_int(value)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ValueError(f"expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise ValueError(f"expected a string, got {value!r}")
        return str(value)
    raise TypeError(f"unsupported option type {type_text(hint)}")


def _coerce_union(hint: Any, value: Any) -> Any:
    args = typing.get_args(hint)
    if type(None) in args and (value is None or (
            isinstance(value, str) and not isinstance(value, QuotedText)
            and value.lower() in _NONE)):
        return None
    for arg in args:
        if arg is type(None):
            continue
        try:
            return _coerce(arg, value)
        except (ValueError, TypeError):
            continue
    raise ValueError(f"expected {type_text(hint)}, got {value!r}")


def _coerce_literal(hint: Any, value: Any) -> Any:
    choices = typing.get_args(hint)
    for choice in choices:
        if value == choice or (isinstance(value, str) and value == format_scalar(choice)):
            return choice
    raise ValueError(f"expected one of {', '.join(format_scalar(c) for c in choices)}, "
                     f"got {value!r}")


def _coerce_tuple(hint: Any, value: Any) -> tuple[Any, ...]:
    args = typing.get_args(hint)
    items = list(value) if isinstance(value, list | tuple) else [value]
    if len(args) == 2 and args[1] is Ellipsis:
        return tuple(_coerce(args[0], item) for item in items)
    if not args:
        return tuple(items)
    if len(items) != len(args):
        raise ValueError(f"expected {len(args)} values, got {len(items)}")
    return tuple(_coerce(arg, item) for arg, item in zip(args, items, strict=True))


def _coerce_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in _TRUE + _FALSE:
        return value.lower() in _TRUE
    raise ValueError(f"expected true or false, got {value!r}")


def _coerce_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError(f"expected an integer, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value, 0)
        except ValueError:
            pass
    raise ValueError(f"expected an integer, got {value!r}")


# -- formatting (the inverse of the text grammar's value parsing) -----------------------

def format_value(value: Any) -> str:
    """Pipeline-text form of an option value: tuples become comma lists."""
    if isinstance(value, tuple):
        return ",".join(format_scalar(v) for v in value) if value else "[]"
    return format_scalar(value)


def format_scalar(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isinf(value) or math.isnan(value):
            return str(value)
        return repr(value)
    if isinstance(value, int):
        return str(value)
    text = str(value)
    if BARE_TEXT.match(text) and text.lower() not in _NONE:
        return text
    return json.dumps(text)
