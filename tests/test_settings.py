"""optc.settings is the one reader of the environment."""

from __future__ import annotations

from pathlib import Path

from optc.settings import read_settings


def test_defaults_when_nothing_is_set() -> None:
    settings = read_settings({})
    assert settings.debug is False
    assert settings.plugin_allow_list is None
    assert settings.cache_dir == Path.home() / ".cache" / "optc"


def test_debug_switch_values() -> None:
    assert read_settings({"OPTC_DEBUG": "1"}).debug
    assert read_settings({"OPTC_DEBUG": "yes"}).debug
    assert not read_settings({"OPTC_DEBUG": "0"}).debug
    assert not read_settings({"OPTC_DEBUG": "false"}).debug


def test_plugin_allow_list_is_normalized() -> None:
    settings = read_settings({"OPTC_PLUGINS": "Optc_Example_Plugin, other-dist,,"})
    assert settings.plugin_allow_list == frozenset({"optc-example-plugin", "other-dist"})
    assert read_settings({"OPTC_PLUGINS": ""}).plugin_allow_list == frozenset()


def test_cache_dir_follows_xdg(tmp_path: Path) -> None:
    assert read_settings({"XDG_CACHE_HOME": str(tmp_path)}).cache_dir == tmp_path / "optc"
