"""Built-in target descriptions (TOML files in this folder)."""

from pathlib import Path


def builtin_target_dir() -> Path:
    """The folder holding optc's own ``*.toml`` target files (the ``optc.targets`` entry)."""
    return Path(__file__).parent
