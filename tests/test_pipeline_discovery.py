"""Pass discovery through entry points, and the checks every pass class must pass."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import pytest

from optc.errors import PluginError
from optc.ir.graph import Graph
from optc.pipeline import (
    Pass,
    PassContext,
    available_pass_plugins,
    available_passes,
    check_registry,
    parse_pipeline,
)
from optc.settings import Settings

BUILTINS = ("eliminate-dead-code", "fold-batchnorm", "fold-constants")


def test_builtins_are_found_through_entry_points() -> None:
    plugins = available_pass_plugins()
    for name in BUILTINS:
        assert plugins[name].distribution == "optc"
        assert plugins[name].value.startswith("optc.passes.")
        assert plugins[name].obj.__module__ == plugins[name].value.split(":")[0]
    assert list(plugins) == sorted(plugins)


def test_builtins_load_even_with_an_empty_allow_list() -> None:
    passes = available_passes(Settings(plugin_allow_list=frozenset()))
    assert set(BUILTINS) <= set(passes)


@pytest.mark.parametrize("name", BUILTINS)
def test_builtin_docstrings_cover_the_style_guide(name: str) -> None:
    cls = available_passes()[name]
    doc = cls.__doc__ or ""
    assert cls.summary() and cls.exact is True
    for section in ("Exact", "Ordering", "Options", "Before -> after"):
        assert section in doc, f"{name} docstring lacks {section!r}"
    for spec in cls.options():
        assert spec.help and spec.name in doc


def good_run(self: Pass, graph: Graph, ctx: PassContext) -> Graph:
    return graph


def make_pass(name: str = "my-pass", doc: str | None = "Does a thing.", frozen: bool = True,
              help_text: str | None = "an option", hint: object = int) -> type[Pass]:
    metadata = {} if help_text is None else {"help": help_text}
    namespace = {
        "__annotations__": {"name": ClassVar[str], "option": hint},
        "name": name, "option": dataclasses.field(default=1, metadata=metadata),
        "run": good_run,
    }
    if doc is not None:
        namespace["__doc__"] = doc
    cls = type("MyPass", (Pass,) if frozen else (object,), namespace)
    return dataclasses.dataclass(frozen=frozen)(cls)


def test_a_well_formed_pass_class_is_accepted() -> None:
    cls = make_pass()
    check_registry({"my-pass": cls})
    assert str(parse_pipeline("my-pass{option=3}", {"my-pass": cls})) == "my-pass{option=3}"


@pytest.mark.parametrize(("kwargs", "key", "message"), [
    ({"help_text": None}, "my-pass", "option 'option' has no help text"),
    ({"help_text": "  "}, "my-pass", "no help text"),
    ({"name": "MyPass"}, "MyPass", "not kebab-case"),
    ({}, "other-name", "differs from its entry-point name 'other-name'"),
    ({"doc": None}, "my-pass", "has no docstring"),
    ({"frozen": False}, "my-pass", "not a subclass of optc.pipeline.Pass"),
    ({"hint": dict[str, int]}, "my-pass", "cannot express"),
])
def test_malformed_pass_classes_are_plugin_errors(kwargs: dict, key: str, message: str) -> None:
    with pytest.raises(PluginError, match=message):
        check_registry({key: make_pass(**kwargs)})


def test_a_non_frozen_subclass_is_refused() -> None:
    # dataclass refuses to make a non-frozen subclass of the frozen base, so check a
    # subclass that skipped the decorator altogether.
    class Undecorated(Pass):
        """Forgot the decorator."""

        name: ClassVar[str] = "undecorated"

        def run(self, graph: Graph, ctx: PassContext) -> Graph:
            return graph

    with pytest.raises(PluginError, match=r"not decorated with @dataclasses\.dataclass"):
        check_registry({"undecorated": Undecorated})


def test_a_pass_without_run_is_refused() -> None:
    @dataclasses.dataclass(frozen=True)
    class NoRun(Pass):
        """Forgot run()."""

        name: ClassVar[str] = "no-run"

    with pytest.raises(PluginError, match=r"does not implement run\(\)"):
        check_registry({"no-run": NoRun})
