"""The distribution lists every package folder (passes/ and targets/ are mapped in)."""

from __future__ import annotations

import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent


def _package_folders() -> set[str]:
    inits = (ROOT / "optc").rglob("__init__.py")
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in inits}
    return found | {"optc.passes", "optc.targets"}


def test_every_package_folder_is_in_pyproject() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = set(config["tool"]["setuptools"]["packages"])
    assert _package_folders() <= listed, sorted(_package_folders() - listed)


def test_listed_packages_exist() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    mapping = config["tool"]["setuptools"]["package-dir"]
    for package in config["tool"]["setuptools"]["packages"]:
        folder = ROOT / mapping.get(package, package.replace(".", "/"))
        assert (folder / "__init__.py").is_file(), package
