"""Pipeline text and TOML forms: parsing, canonical printing, errors."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import ClassVar, Literal

import pytest

from optc.errors import UnknownNameError, UserInputError
from optc.ir.graph import Graph
from optc.pipeline import (
    Pass,
    PassContext,
    Pipeline,
    PipelineSyntaxError,
    load_pipeline_toml,
    parse_pipeline,
    parse_pipeline_toml,
    split_pipeline,
)


@dataclasses.dataclass(frozen=True)
class Quantize(Pass):
    """Stand-in with one option of every supported type (run() leaves the graph alone).

    Lossy. Options: see the fields.
    """

    name: ClassVar[str] = "quantize"
    exact: ClassVar[bool] = False
    bits: tuple[int, ...] = dataclasses.field(default=(8,), metadata={"help": "bit widths"})
    max_drop: float = dataclasses.field(default=0.01, metadata={"help": "accuracy budget"})
    mode: Literal["tensor", "channel"] = dataclasses.field(
        default="tensor", metadata={"help": "granularity"})
    label: str | None = dataclasses.field(default=None, metadata={"help": "a free text"})
    symmetric: bool = dataclasses.field(default=True, metadata={"help": "symmetric range"})
    limit: int = dataclasses.field(default=0, metadata={"help": "an integer"})

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        return graph


@dataclasses.dataclass(frozen=True)
class Budgeted(Pass):
    """Stand-in with a required option (no default).

    Lossy. Options: budget.
    """

    name: ClassVar[str] = "budgeted"
    budget: float = dataclasses.field(metadata={"help": "seconds allowed"})

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        return graph


REGISTRY = {"quantize": Quantize, "budgeted": Budgeted}

CANONICAL = [
    "",
    "fold-constants",
    "fold-constants,eliminate-dead-code",
    "fold-constants{max-bytes=1024},fold-batchnorm,eliminate-dead-code",
]


@pytest.mark.parametrize("text", CANONICAL)
def test_builtin_canonical_text_round_trips(text: str) -> None:
    pipeline = parse_pipeline(text)
    assert str(pipeline) == text
    assert parse_pipeline(str(pipeline)) == pipeline


def test_text_is_normalized_and_values_are_typed() -> None:
    text = ' quantize { bits=4,8  max-drop=0.02 mode=channel label="a b, c" symmetric=no } , ' \
           "quantize{limit=0x10 bits=[]}"
    pipeline = parse_pipeline(text, REGISTRY)
    first, second = pipeline
    assert first == Quantize(bits=(4, 8), max_drop=0.02, mode="channel", label="a b, c",
                             symmetric=False)
    assert second == Quantize(limit=16, bits=())
    assert str(pipeline) == ('quantize{bits=4,8 max-drop=0.02 mode=channel label="a b, c" '
                             "symmetric=false},quantize{bits=[] limit=16}")
    assert parse_pipeline(str(pipeline), REGISTRY) == pipeline


def test_defaults_are_left_out_unless_asked_for() -> None:
    pipeline = parse_pipeline("quantize{bits=8 limit=0}", REGISTRY)
    assert str(pipeline) == "quantize"
    full = pipeline.text(include_defaults=True)
    assert full == "quantize{bits=8 max-drop=0.01 mode=tensor label=none symmetric=true limit=0}"
    assert parse_pipeline(full, REGISTRY) == pipeline


def test_none_versus_the_string_none() -> None:
    quoted, bare = parse_pipeline('quantize{label="none"},quantize{label=none}', REGISTRY)
    assert quoted.label == "none" and bare.label is None
    assert str(Pipeline((quoted,))) == 'quantize{label="none"}'


def test_required_options() -> None:
    with pytest.raises(PipelineSyntaxError, match=r"pass 'budgeted' needs option\(s\) budget"):
        parse_pipeline("budgeted", REGISTRY)
    pipeline = parse_pipeline("budgeted{budget=2}", REGISTRY)
    assert str(pipeline) == "budgeted{budget=2.0}"  # required options are always printed
    assert parse_pipeline(str(pipeline), REGISTRY) == pipeline


def test_underscore_field_names_are_accepted() -> None:
    assert parse_pipeline("quantize{max_drop=0.5}", REGISTRY)[0].max_drop == 0.5


def test_split_reports_columns() -> None:
    raw = split_pipeline("a, b{x=1 y=2,3}")
    assert [(r.name, r.options, r.column) for r in raw] == [
        ("a", {}, 1), ("b", {"x": "1", "y": ["2", "3"]}, 4)]


def test_unknown_pass_lists_close_matches() -> None:
    with pytest.raises(UnknownNameError, match=r"unknown pass 'fold-constant'.*fold-constants"):
        parse_pipeline("fold-constant")


def test_unknown_option_lists_valid_ones() -> None:
    with pytest.raises(UnknownNameError, match="valid options: max-bytes"):
        parse_pipeline("fold-constants{max-byte=3}")


@pytest.mark.parametrize(("text", "message"), [
    ("quantize{bits=a}", "option 'bits': expected an integer, got 'a'"),
    ("quantize{max-drop=1,2}", "expected one float, got a list of 2"),
    ("quantize{mode=layer}", "expected one of tensor, channel"),
    ("quantize{symmetric=maybe}", "expected true or false"),
    ("quantize{limit=1.5}", "expected an integer"),
    ("quantize{bits=4, limit=1}", "separated by spaces"),
    ("quantize{bits=4", "missing '}'"),
    ("quantize{bits}", "expected '=' after option 'bits'"),
    ("quantize{bits=4 bits=5}", "given twice"),
    ("quantize,,quantize", "column 10: expected a pass name"),
    ("quantize quantize", "expected ',' between passes"),
    ('quantize{label="open}', "closing quote"),
    ("quantize{limit=}", "has no value"),
])
def test_bad_text_is_a_one_line_user_error(text: str, message: str) -> None:
    with pytest.raises(PipelineSyntaxError, match=message) as info:
        parse_pipeline(text, REGISTRY)
    assert isinstance(info.value, UserInputError)
    assert "\n" not in str(info.value)


TOML = """
[[pass]]
name = "quantize"
[pass.options]
bits = [4, 8]
max-drop = 0.05
mode = "channel"

[[pass]]
name = "quantize"
options = { symmetric = false, label = "x" }
"""


def test_toml_tables_form() -> None:
    pipeline = parse_pipeline_toml(TOML, REGISTRY)
    assert pipeline == Pipeline((Quantize(bits=(4, 8), max_drop=0.05, mode="channel"),
                                 Quantize(symmetric=False, label="x")))
    assert parse_pipeline_toml(pipeline.to_toml(), REGISTRY) == pipeline


def test_toml_string_form_and_file(tmp_path: Path) -> None:
    path = tmp_path / "pipeline.toml"
    path.write_text('pipeline = "fold-constants{max-bytes=64},eliminate-dead-code"\n')
    pipeline = load_pipeline_toml(path)
    assert str(pipeline) == "fold-constants{max-bytes=64},eliminate-dead-code"
    tables = pipeline.to_toml()
    assert tables.startswith('[[pass]]\nname = "fold-constants"\n[pass.options]\nmax-bytes = 64')
    assert parse_pipeline_toml(tables) == pipeline


@pytest.mark.parametrize(("text", "message"), [
    ("pipeline = 3", "'pipeline' must be a string"),
    ('pipeline = "quantize"\n[[pass]]\nname = "quantize"', "not both"),
    ("[[pass]]\noptions = {}", "missing 'name'"),
    ('[[pass]]\nname = "quantize"\nbits = [4]', r"unknown key\(s\) bits"),
    ('[[pass]]\nname = "quantize"\n[pass.options]\nbits = ["x"]', "expected an integer"),
    ("passes = []", "unknown key"),
    ("[[pass]\n", "pipeline TOML"),
])
def test_bad_toml(text: str, message: str) -> None:
    with pytest.raises(UserInputError, match=message):
        parse_pipeline_toml(text, REGISTRY)


def test_missing_toml_file_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(PipelineSyntaxError, match="cannot read pipeline file"):
        load_pipeline_toml(tmp_path / "absent.toml")
