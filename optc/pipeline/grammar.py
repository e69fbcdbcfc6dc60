"""Pipeline text: ``"fold-constants,mpq{bits=4,8 max-drop=0.01},eliminate-dead-code"``.

Grammar (whitespace is allowed around passes, braces and options)::

    pipeline := [ pass ("," pass)* ]
    pass     := NAME [ "{" [ option (WS option)* ] "}" ]
    option   := KEY "=" value                 # options are separated by spaces
    value    := item ("," item)* | "[" [ item ("," item)* ] "]"
    item     := BARE | '"' json-escaped text '"'

``BARE`` is any run of characters other than space, ``,{}[]="``. A value with one item
is a scalar; several items (or brackets) make a list, for tuple options. This module
only splits the text; ``optc.pipeline.manager`` turns names and values into passes.
"""

from __future__ import annotations

import dataclasses
import json
import re

from optc.pipeline.errors import PipelineSyntaxError
from optc.pipeline.options import QuotedText

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")
_BARE = re.compile(r"[^\s,{}\[\]=\"]+")
_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"')

RawValue = str | list[str]


@dataclasses.dataclass(frozen=True)
class RawPass:
    """One pass as written: its name, raw option values, and its column (for errors)."""

    name: str
    options: dict[str, RawValue]
    column: int


def split_pipeline(text: str) -> list[RawPass]:
    """Split pipeline text into passes and raw option values."""
    return _Scanner(text).pipeline()


class _Scanner:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, message: str) -> None:
        raise PipelineSyntaxError(
            f"pipeline text column {self.pos + 1}: {message} (in {self.text!r})")

    def skip_ws(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def match(self, pattern: re.Pattern[str], what: str) -> str:
        found = pattern.match(self.text, self.pos)
        if not found:
            got = self.peek() or "end of text"
            self.fail(f"expected {what}, got {got!r}")
            raise AssertionError  # unreachable: fail() raises
        self.pos = found.end()
        return found.group()

    def pipeline(self) -> list[RawPass]:
        passes: list[RawPass] = []
        self.skip_ws()
        if not self.peek():
            return passes
        while True:
            passes.append(self.one_pass())
            self.skip_ws()
            if not self.peek():
                return passes
            if self.peek() != ",":
                self.fail(f"expected ',' between passes, got {self.peek()!r}")
            self.pos += 1
            self.skip_ws()

    def one_pass(self) -> RawPass:
        column = self.pos + 1
        name = self.match(_NAME, "a pass name")
        self.skip_ws()
        options: dict[str, RawValue] = {}
        if self.peek() == "{":
            self.pos += 1
            self.options(name, options)
        return RawPass(name, options, column)

    def options(self, pass_name: str, options: dict[str, RawValue]) -> None:
        while True:
            self.skip_ws()
            if self.peek() == "}":
                self.pos += 1
                return
            if not self.peek():
                self.fail(f"missing '}}' after the options of {pass_name!r}")
            key = self.match(_NAME, "an option name")
            if self.peek() != "=":
                self.fail(f"expected '=' after option {key!r}")
            self.pos += 1
            if key in options:
                self.fail(f"option {key!r} of {pass_name!r} is given twice")
            options[key] = self.value(key)
            if self.peek() not in ("}", "") and not self.peek().isspace():
                self.fail(f"expected a space or '}}' after option {key!r}")

    def value(self, key: str) -> RawValue:
        if self.peek() == "[":
            self.pos += 1
            items = [] if self.peek() == "]" else self.items(key)
            if self.peek() != "]":
                self.fail(f"missing ']' in the value of {key!r}")
            self.pos += 1
            return items
        items = self.items(key)
        return items[0] if len(items) == 1 else items

    def items(self, key: str) -> list[str]:
        items = [self.item(key)]
        while self.peek() == ",":
            self.pos += 1
            if not self.peek() or self.peek().isspace() or self.peek() in "}]":
                self.fail(f"empty list item in the value of {key!r} (options inside "
                          "{...} are separated by spaces, list items by commas)")
            items.append(self.item(key))
        return items

    def item(self, key: str) -> str:
        if self.peek() == '"':
            quoted = self.match(_QUOTED, "a closing quote")
            try:
                return QuotedText(json.loads(quoted))
            except ValueError:
                self.fail(f"bad escape in the quoted value of {key!r}")
        if not self.peek() or self.peek().isspace() or self.peek() in "}]":
            self.fail(f"option {key!r} has no value")
        return self.match(_BARE, f"a value for {key!r}")
