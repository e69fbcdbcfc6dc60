"""The environment variables optc reads, all of them, read here and nowhere else.

- ``OPTC_DEBUG=1``: show full tracebacks instead of one-line errors.
- ``OPTC_PLUGINS=dist-a,dist-b``: allow-list of distributions whose plugins load
  (optc's own are always loaded); unset means every installed plugin loads.
- ``XDG_CACHE_HOME``: optc caches (host calibration, tuning databases) live in
  ``$XDG_CACHE_HOME/optc``, by default ``~/.cache/optc`` (the XDG base-directory rule).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path


@dataclasses.dataclass(frozen=True)
class Settings:
    debug: bool = False
    plugin_allow_list: frozenset[str] | None = None
    cache_dir: Path = dataclasses.field(
        default_factory=lambda: Path.home() / ".cache" / "optc")


def read_settings(environ: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if environ is None else environ
    debug = env.get("OPTC_DEBUG", "").strip().lower() not in ("", "0", "false", "no")
    allow = env.get("OPTC_PLUGINS")
    allow_list = None
    if allow is not None:
        allow_list = frozenset(_normalize(d) for d in allow.split(",") if d.strip())
    cache_base = env.get("XDG_CACHE_HOME", "").strip()
    cache_dir = (Path(cache_base) if cache_base else Path.home() / ".cache") / "optc"
    return Settings(debug=debug, plugin_allow_list=allow_list, cache_dir=cache_dir)


def _normalize(dist: str) -> str:
    return dist.strip().lower().replace("_", "-")
