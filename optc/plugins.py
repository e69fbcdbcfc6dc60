"""Plugin discovery through Python entry points.

Groups: ``optc.passes`` (a ``Pass`` subclass), ``optc.targets`` (a folder of target
TOML files, or a callable returning one), ``optc.cost_models`` (a ``CostModel`` class).
optc registers its own built-ins the same way, so a third-party plugin is a peer of
the built-ins. Two distributions claiming one name is an error naming both.
"""

from __future__ import annotations

import dataclasses
import logging
from importlib import metadata
from typing import Any

from optc.errors import PluginError
from optc.settings import Settings, read_settings

log = logging.getLogger(__name__)

OWN_DISTRIBUTION = "optc"
GROUPS = ("optc.passes", "optc.targets", "optc.cost_models")


@dataclasses.dataclass(frozen=True)
class Plugin:
    """One loaded entry point."""

    group: str
    name: str
    obj: Any
    distribution: str
    value: str

    @property
    def builtin(self) -> bool:
        return self.distribution == OWN_DISTRIBUTION


def load_group(group: str, settings: Settings | None = None) -> dict[str, Plugin]:
    """Load every entry point of ``group`` allowed by ``OPTC_PLUGINS``, keyed by name."""
    settings = settings or read_settings()
    found: dict[str, Plugin] = {}
    for entry in _entry_points(group):
        dist = _distribution_name(entry)
        if not _allowed(dist, settings):
            log.debug("plugin %s from %s not in OPTC_PLUGINS; skipped", entry.name, dist)
            continue
        first = found.get(entry.name)
        if first is not None and first.distribution != dist:
            raise PluginError(
                f"{group} name {entry.name!r} is registered twice: by {first.distribution}"
                f" ({first.value}) and by {dist} ({entry.value})")
        if entry.name in found:
            continue  # the same distribution seen twice on sys.path
        try:
            obj = entry.load()
        except Exception as exc:  # a broken plugin must be reported, whatever it raised
            raise PluginError(f"cannot load {group} plugin {entry.name!r} from {dist} "
                              f"({entry.value}): {type(exc).__name__}: {exc}") from exc
        found[entry.name] = Plugin(group, entry.name, obj, dist, entry.value)
    return found


def _entry_points(group: str) -> list[metadata.EntryPoint]:
    return list(metadata.entry_points(group=group))


def _distribution_name(entry: metadata.EntryPoint) -> str:
    dist = getattr(entry, "dist", None)
    name = dist.metadata["Name"] if dist is not None else "<unknown>"
    return str(name).lower().replace("_", "-")


def _allowed(dist: str, settings: Settings) -> bool:
    if settings.plugin_allow_list is None or dist == OWN_DISTRIBUTION:
        return True
    return dist in settings.plugin_allow_list
