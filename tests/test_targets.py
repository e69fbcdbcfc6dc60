"""Targets: the shipped TOML files load, agree with TVM, and bad files fail clearly."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from optc.errors import PluginError, UnknownNameError, UserInputError
from optc.target import MEASURED, Target, get_target, load_target_file, load_targets, target_dirs

SHIPPED = Path(__file__).resolve().parent.parent / "targets"


@pytest.fixture(scope="module")
def targets() -> dict[str, Target]:
    return load_targets()


def test_every_shipped_file_is_an_installed_target(targets: dict[str, Target]) -> None:
    shipped = sorted(p.stem for p in SHIPPED.glob("*.toml"))
    assert {"host", "orin"} <= set(shipped)
    assert sorted(targets) == shipped
    for name, target in targets.items():
        assert target.name == name
        assert target.distribution == "optc"
        assert target.path.resolve() == (SHIPPED / f"{name}.toml").resolve()


def test_builtin_folder_comes_from_the_entry_point() -> None:
    dirs = {folder.resolve(): dist for folder, dist in target_dirs().items()}
    assert dirs[SHIPPED] == "optc"


def test_shipped_targets_build_in_tvm(targets: dict[str, Target]) -> None:
    for target in targets.values():
        tvm_target = target.tvm_target()
        assert tvm_target.kind.name == target.tvm_target_dict["kind"]


def test_orin_table_matches_tvm_tag(targets: dict[str, Target]) -> None:
    import tvm.target

    orin = targets["orin"]
    assert orin.tvm_tag == "nvidia/jetson-agx-orin-64gb"
    from_tag = tvm.target.Target(orin.tvm_tag).export()
    from_table = orin.tvm_target().export()
    assert from_table == from_tag


def test_orin_figures_and_sources(targets: dict[str, Target]) -> None:
    orin = targets["orin"]
    assert orin.host_triple == "aarch64-linux-gnu"
    assert orin.cross_compiler == "aarch64-linux-gnu-g++"
    assert orin.bandwidth() == pytest.approx(204.8e9)
    assert orin.peak("float32") == pytest.approx(5.3e12)
    assert orin.peak("int8", sparse=True) == pytest.approx(2 * orin.peak("int8"))
    assert orin.peak("float16") < orin.peak("int8")
    assert 0 < orin.kernel_launch_overhead() < 1e-3
    assert orin.pending_figures() == ()
    for key in ("memory_bandwidth", "peak_flops.float32", "peak_flops_sparse.int8"):
        assert "Jetson AGX Orin" in orin.sources[key]


def test_host_figures_are_explicitly_pending(targets: dict[str, Target]) -> None:
    host = targets["host"]
    assert host.host_triple is None and host.cross_compiler is None
    assert host.memory_bandwidth == MEASURED
    assert set(host.pending_figures()) == {
        *(f"peak_flops.{d}" for d in host.supported_dtypes), "memory_bandwidth",
        "launch_overhead"}
    with pytest.raises(UserInputError, match="not measured yet"):
        host.peak("float32")
    with pytest.raises(UserInputError, match="not measured yet"):
        host.bandwidth()
    with pytest.raises(UnknownNameError, match="float16"):
        host.peak("float16")


def test_measurements_fill_pending_figures(targets: dict[str, Target]) -> None:
    host = targets["host"]
    measured = host.with_measurements({"peak_flops.float32": 1.5e11, "memory_bandwidth": 2e10},
                                      source="host micro-benchmark, test run")
    assert measured.peak("float32") == 1.5e11 and measured.bandwidth() == 2e10
    assert measured.sources["memory_bandwidth"] == "host micro-benchmark, test run"
    assert set(measured.pending_figures()) == {"peak_flops.int8", "launch_overhead"}
    assert host.peak_flops["float32"] == MEASURED  # the original is untouched
    assert measured != host and len({host, measured, targets["host"]}) == 2  # hashable
    with pytest.raises(UnknownNameError, match=r"no figure 'peak_flops\.float16'"):
        host.with_measurements({"peak_flops.float16": 1e12}, source="x")


def test_default_pipelines_parse(targets: dict[str, Target]) -> None:
    from optc.pipeline import parse_pipeline

    for target in targets.values():
        assert len(parse_pipeline(target.default_pipeline)) > 0


def test_unknown_target_suggests_close_names(targets: dict[str, Target]) -> None:
    with pytest.raises(UnknownNameError, match=r"unknown target 'orn'; did you mean 'orin'"):
        get_target("orn", targets)
    with pytest.raises(UnknownNameError, match="known: host, orin"):
        get_target("tpu-v9")
    assert get_target("orin") == targets["orin"]


# -- broken files ----------------------------------------------------------------------

def _orin_with(tmp_path: Path, old: str, new: str, name: str = "orin") -> Path:
    text = (SHIPPED / "orin.toml").read_text()
    assert old in text, old
    path = tmp_path / f"{name}.toml"
    path.write_text(text.replace(old, new, 1))
    return path


BROKEN = [
    ("memory_bandwidth = 204.8e9", "memory_bandwidth = 204.8e9 204", "not valid TOML"),
    ("memory_bandwidth = 204.8e9", "memory_bandwidth = 204.8",
     r"key 'memory_bandwidth' is 204.8, implausible.*bytes per second"),
    ("launch_overhead = 5e-6", "launch_overhead = 5", r"key 'launch_overhead'.*seconds"),
    ("memory_bandwidth = 204.8e9", "memory_bandwidth = inf", r"key 'memory_bandwidth' is inf"),
    ('arch = "sm_87"', 'arch = 1979-05-27', r"key 'tvm.target' must hold JSON values only"),
    ("memory_bandwidth = 204.8e9", "memory_bandwith = 204.8e9",
     r"key 'memory_bandwith' is not a target key; did you mean 'memory_bandwidth'"),
    ('default_pipeline = "fold', 'default_pipeline = 3 #', r"key 'default_pipeline'.*string"),
    ('int8 = 85e12', 'int8 = "fast"', r"key 'peak_flops.int8'.*number"),
    ('float16 = 42.5e12', 'float16 = 42.5e12\nfloat64 = 1e12',
     r"key 'peak_flops.float64' is for a dtype missing from supported_dtypes"),
    ('"float32", "float16", "int8"]', '"float32", "float16", "int8", "float17"]',
     r"key 'supported_dtypes' names 'float17', which is not a dtype"),
    ('"float32", "float16", "int8"]', '"float32", "float16", "int8", "bfloat16"]',
     r"key 'peak_flops' has no figure for supported dtype\(s\) bfloat16"),
    ('name = "orin"', 'name = "xavier"', r"key 'name'.*must agree"),
    ('[tvm.target]  #', '[tvm.targets]  #', r"key 'tvm.targets' is not a target key"),
    ('"peak_flops.float32" = ', '"peak_flops.float32x" = ',
     r"key 'sources' gives no source for peak_flops.float32"),
]


@pytest.mark.parametrize(("old", "new", "message"), BROKEN)
def test_broken_target_file_names_file_and_key(tmp_path: Path, old: str, new: str,
                                               message: str) -> None:
    path = _orin_with(tmp_path, old, new)
    with pytest.raises(UserInputError, match=message) as info:
        load_target_file(path)
    assert str(info.value).startswith(f"{path}: ")


def test_string_tvm_target_is_refused_with_the_reason(tmp_path: Path) -> None:
    path = tmp_path / "host.toml"
    text = (SHIPPED / "host.toml").read_text().replace('target = { kind = "llvm" }',
                                                      'target = "llvm -mcpu=native"')
    path.write_text(text)
    with pytest.raises(UserInputError, match=r"TVM 0\.27 refuses target strings"):
        load_target_file(path)


def test_target_refused_by_tvm_is_a_user_error(tmp_path: Path) -> None:
    path = tmp_path / "host.toml"
    path.write_text((SHIPPED / "host.toml").read_text().replace('kind = "llvm"',
                                                               'kind = "llvmx"'))
    target = load_target_file(path)  # TVM is only consulted when asked
    with pytest.raises(UserInputError, match=re.escape(f"{path}: [tvm] target is refused")):
        target.tvm_target()


def test_unreadable_target_file(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="cannot read target file"):
        load_target_file(tmp_path / "missing.toml")
    (tmp_path / "bin.toml").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(UserInputError, match="not valid TOML"):
        load_target_file(tmp_path / "bin.toml")


def test_one_name_in_two_folders_names_both(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    for folder in (first, second):
        folder.mkdir()
        (folder / "host.toml").write_text((SHIPPED / "host.toml").read_text())
    with pytest.raises(PluginError, match=r"'host' is defined twice: .*a/host.toml \(dist-a\) "
                                          r"and .*b/host.toml \(dist-b\)"):
        load_targets({first: "dist-a", second: "dist-b"})
    assert list(load_targets({first: "dist-a"})) == ["host"]
