"""Targets: the shipped TOML files load, agree with TVM, and bad files fail clearly."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from optc.errors import PluginError, UnknownNameError, UserInputError
from optc.target import MEASURED, Target, get_target, load_target_file, load_targets, target_dirs
from optc.target_file import EFFICIENCY_CLASSES

SHIPPED = Path(__file__).resolve().parent.parent / "targets"


@pytest.fixture(scope="module")
def targets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Target]:
    """The shipped targets as files give them: an empty cache, so the host is pending."""
    return load_targets(cache_dir=tmp_path_factory.mktemp("empty-cache"))


def test_every_shipped_file_is_an_installed_target(targets: dict[str, Target]) -> None:
    shipped = sorted(p.stem for p in SHIPPED.glob("*.toml"))
    assert {"host", "orin", "rasp4b", "h100", "npu-example"} <= set(shipped)
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


@pytest.mark.parametrize(("name", "tag"), [("orin", "nvidia/jetson-agx-orin-64gb"),
                                         ("rasp4b", "raspberry-pi/4b-aarch64"),
                                         ("h100", "nvidia/nvidia-h100")])
def test_target_table_matches_tvm_tag(targets: dict[str, Target], name: str, tag: str) -> None:
    import tvm.target

    target = targets[name]
    assert target.tvm_tag == tag
    assert target.tvm_target().export() == tvm.target.Target(tag).export()


def test_every_published_figure_has_a_source(targets: dict[str, Target]) -> None:
    for target in targets.values():
        figures = [f"peak_flops.{d}" for d, v in target.peak_flops.items() if v != MEASURED]
        figures += [f"peak_flops_sparse.{d}" for d in target.peak_flops_sparse]
        if target.fallback is not None:
            figures += [f"fallback.peak_flops.{d}" for d in target.fallback.peak_flops]
            figures += ["fallback.link_bandwidth", "fallback.link_latency"]
        for key in figures:
            assert len(target.sources[key]) > 20, (target.name, key)


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


def test_rasp4b_figures(targets: dict[str, Target]) -> None:
    pi = targets["rasp4b"]
    assert pi.host_triple == "aarch64-linux-gnu"
    assert pi.cross_compiler == "aarch64-linux-gnu-g++"
    assert pi.tvm_target_dict["mcpu"] == "cortex-a72"
    assert pi.peak("float32") == pytest.approx(4 * 1.8e9 * 8)  # cores x clock x FLOP/cycle
    assert pi.bandwidth() < 12.8e9  # below the LPDDR4-3200 x 32-bit theoretical rate
    assert "UNCERTAIN" not in pi.sources["peak_flops.int8"]  # the comment says it, sources why
    assert "derived" in pi.sources["peak_flops.int8"]


def test_h100_figures(targets: dict[str, Target]) -> None:
    h100 = targets["h100"]
    assert h100.kind == "cuda" and h100.tvm_target_dict["arch"] == "sm_90a"
    assert h100.bandwidth() == pytest.approx(3.35e12)
    assert h100.peak("float32") == pytest.approx(67e12)
    assert h100.peak("tfloat32") == pytest.approx(494.7e12)  # a compute mode, not a dtype
    assert "tfloat32" not in h100.supported_dtypes
    for dtype in ("float16", "bfloat16", "float8_e4m3fn", "int8", "tfloat32"):
        assert h100.peak(dtype, sparse=True) == pytest.approx(2 * h100.peak(dtype), rel=1e-3)
    assert h100.peak("int8") == pytest.approx(2 * h100.peak("float16"), rel=1e-3)


def test_npu_example_carries_ops_fallback_and_link(targets: dict[str, Target]) -> None:
    import tvm.relax.backend.contrib.example_npu  # noqa: F401  # registers the patterns
    from tvm.relax.backend.pattern_registry import get_patterns_with_prefix

    npu = targets["npu-example"]
    assert npu.tvm_byoc == "example_npu"
    assert get_patterns_with_prefix(npu.tvm_byoc)  # the BYOC backend exists in this TVM
    assert npu.supported_dtypes == ("int8",)
    assert {"Conv", "MatMul", "Relu"} <= npu.supported_ops  # type: ignore[operator]
    assert npu.runs("Conv") and not npu.runs("LayerNormalization")
    assert npu.fallback is not None
    assert npu.fallback_figure("peak_flops.float32") == targets["rasp4b"].peak("float32")
    assert npu.fallback_figure("memory_bandwidth") == targets["rasp4b"].bandwidth()
    assert 0 < npu.fallback_figure("link_bandwidth") < npu.bandwidth()
    assert 0 < npu.fallback_figure("link_latency") < 1e-2
    with pytest.raises(UnknownNameError, match="no fallback device"):
        targets["orin"].fallback_figure("memory_bandwidth")


def test_digest_follows_the_figures(targets: dict[str, Target]) -> None:
    orin = targets["orin"]
    assert orin.digest() == load_target_file(SHIPPED / "orin.toml", "other").digest()
    faster = orin.with_measurements({"memory_bandwidth": 1e12}, source="test")
    assert faster.digest() != orin.digest()
    tuned = orin.with_efficiency({"conv": 0.5}, source="fit")
    assert tuned.efficiency["conv"] == 0.5 and tuned.digest() != orin.digest()
    with pytest.raises(UserInputError, match="not an op class"):
        orin.with_efficiency({"convolution": 0.5}, source="fit")
    with pytest.raises(UserInputError, match=r"in \(0, 1\]"):
        orin.with_efficiency({"conv": 1.5}, source="fit")
    assert set(EFFICIENCY_CLASSES) >= {"conv", "matmul", "elementwise", "data"}


def test_host_figures_are_explicitly_pending(targets: dict[str, Target]) -> None:
    host = targets["host"]
    assert host.host_triple is None and host.cross_compiler is None
    assert host.calibration == "host-cpu"
    assert host.memory_bandwidth == MEASURED
    assert set(host.pending_figures()) == {
        *(f"peak_flops.{d}" for d in host.supported_dtypes), "memory_bandwidth",
        "launch_overhead", "cache_size", "cache_bandwidth"}
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
    assert set(measured.pending_figures()) == {"peak_flops.int8", "launch_overhead",
                                               "cache_size", "cache_bandwidth"}
    assert host.peak_flops["float32"] == MEASURED  # the original is untouched
    assert measured != host and len({host, measured, targets["host"]}) == 2  # hashable
    with pytest.raises(UnknownNameError, match=r"no figure 'peak_flops\.float16'"):
        host.with_measurements({"peak_flops.float16": 1e12}, source="x")
    # a calibration may add a dtype the CPU turned out to have units for
    wider = host.with_measurements({"peak_flops.bfloat16": 3e11}, source="x", new_dtypes=True)
    assert wider.supported_dtypes[-1] == "bfloat16" and wider.peak("bfloat16") == 3e11
    with pytest.raises(UnknownNameError, match="no figure 'cache_size'"):
        targets["orin"].with_measurements({"cache_size": 1e6}, source="x")


def test_default_pipelines_parse(targets: dict[str, Target]) -> None:
    from optc.pipeline import parse_pipeline

    for target in targets.values():
        assert len(parse_pipeline(target.default_pipeline)) > 0


def test_unknown_target_suggests_close_names(targets: dict[str, Target]) -> None:
    with pytest.raises(UnknownNameError, match=r"unknown target 'orn'; did you mean 'orin'"):
        get_target("orn", targets)
    with pytest.raises(UnknownNameError, match="known: h100, host, npu-example, orin, rasp4b"):
        get_target("tpu-v9", targets)
    assert get_target("orin") == targets["orin"]
    # without calibration, a pending host stays pending (nothing is measured)
    assert get_target("host", targets, calibrate=False) is targets["host"]


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
    ('float16 = 42.5e12', 'float16 = 42.5e12\ntfloat32 = "fast"', r"key 'peak_flops.tfloat32'"),
    ('name = "orin"', 'name = "orin"\nsupported_ops = ["Conv"]',
     r"key 'supported_ops' needs a \[fallback\] table"),
    ('name = "orin"', 'name = "orin"\nsupported_ops = []', r"key 'supported_ops' must be a"),
    ('name = "orin"', 'name = "orin"\ncalibration = "gpu-bench"',
     r"key 'calibration' is 'gpu-bench'; known: host-cpu"),
    ('[sources]', '[efficiency]\nmatmull = 0.5\n\n[sources]',
     r"key 'efficiency.matmull' is not an op class; did you mean 'matmul'"),
    ('[sources]', '[efficiency]\nconv = 0\n\n[sources]', r"key 'efficiency.conv' is 0"),
    ('[sources]', '[efficiency]\nconv = 0.5\n\n[sources]',
     r"key 'sources' gives no source for efficiency"),
    ('[sources]', '[cache]\nsize = 4e6\n\n[sources]', r"key 'cache.bandwidth' is missing"),
    ('[sources]', '[cache]\nsize = 10\nbandwidth = 1e11\n\n[sources]',
     r"key 'cache.size' is 10, implausible: expected > 1024 bytes"),
    ('[sources]', '[cache]\nsize = 4e6\nbandwidth = 1e11\n\n[sources]',
     r"gives no source for cache.size, cache.bandwidth"),
]


@pytest.mark.parametrize(("old", "new", "message"), BROKEN)
def test_broken_target_file_names_file_and_key(tmp_path: Path, old: str, new: str,
                                               message: str) -> None:
    path = _orin_with(tmp_path, old, new)
    with pytest.raises(UserInputError, match=message) as info:
        load_target_file(path)
    assert str(info.value).startswith(f"{path}: ")


def test_fallback_table_is_checked(tmp_path: Path) -> None:
    text = (SHIPPED / "npu-example.toml").read_text()
    cases = [
        ("link_latency = 1e-4", "link_latency = 5", r"key 'fallback.link_latency' is 5"),
        ("link_bandwidth = 3e8", "link_bw = 3e8", r"key 'fallback.link_bw' is not a target key"),
        ("peak_flops = { float32 = 57.6e9, int8 = 115.2e9 }",
         "peak_flops = { float33 = 57.6e9 }", r"key 'fallback.peak_flops.float33' names"),
        ('"fallback.link_bandwidth" = ', '"fallback.link_bw" = ',
         r"gives no source for fallback.link_bandwidth"),
    ]
    for old, new, message in cases:
        assert old in text, old
        path = tmp_path / "npu-example.toml"
        path.write_text(text.replace(old, new, 1))
        with pytest.raises(UserInputError, match=message):
            load_target_file(path)


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
        load_targets({first: "dist-a", second: "dist-b"}, cache_dir=tmp_path)
    assert list(load_targets({first: "dist-a"}, cache_dir=tmp_path)) == ["host"]
