"""Finding passes: entry points of group ``optc.passes``, built-ins included.

Every loaded object is checked to be a well-formed pass class (frozen dataclass,
kebab-case name equal to its entry-point name, help text on every option, docstring);
anything else is a ``PluginError`` naming the distribution that registered it.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping

from optc.errors import PluginError, UnknownNameError
from optc.pipeline.base import Pass, pass_class_problems
from optc.plugins import Plugin, load_group
from optc.settings import Settings

PASS_GROUP = "optc.passes"

PassRegistry = Mapping[str, type[Pass]]


def available_pass_plugins(settings: Settings | None = None) -> dict[str, Plugin]:
    """Every allowed ``optc.passes`` entry point, checked, sorted by name."""
    plugins = load_group(PASS_GROUP, settings)
    for name, plugin in plugins.items():
        problems = pass_class_problems(plugin.obj, expected_name=name)
        if problems:
            raise PluginError(f"pass plugin {name!r} from {plugin.distribution} "
                              f"({plugin.value}) is not a valid pass: {'; '.join(problems)}")
    return dict(sorted(plugins.items()))


def available_passes(settings: Settings | None = None) -> dict[str, type[Pass]]:
    """Pass name -> pass class, for every installed (and allowed) pass."""
    return {name: plugin.obj for name, plugin in available_pass_plugins(settings).items()}


def check_registry(registry: PassRegistry) -> None:
    """Check a hand-made name -> class mapping like discovery checks entry points."""
    for name, cls in registry.items():
        problems = pass_class_problems(cls, expected_name=name)
        if problems:
            raise PluginError(f"pass {name!r} ({cls!r}) is not a valid pass: "
                              f"{'; '.join(problems)}")


def lookup_pass(name: str, registry: PassRegistry) -> type[Pass]:
    """The class registered as ``name``; ``UnknownNameError`` listing close matches."""
    cls = registry.get(name)
    if cls is not None:
        return cls
    close = difflib.get_close_matches(name, list(registry), n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    known = ", ".join(sorted(registry)) or "none installed"
    raise UnknownNameError(f"unknown pass {name!r}{hint} (available: {known})")
