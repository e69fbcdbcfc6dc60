"""Host calibration: the micro-benchmark measures this CPU, the figures are cached per user
and machine kind, and ``get_target("host")`` applies them transparently."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from optc.cost import calibration
from optc.cost.calibration import Calibration
from optc.cost.microbench import llc_bytes, native_extra_dtypes
from optc.target import MEASURED, Target, get_target, load_target_file, load_targets

SHIPPED = Path(__file__).resolve().parent.parent / "targets"


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("optc-cache")


@pytest.fixture(scope="module")
def host(cache_dir: Path) -> Target:
    """The host target, calibrated once in quick mode into a private cache."""
    pending = load_targets(cache_dir=cache_dir)["host"]
    assert pending.pending_figures()
    return calibration.calibrate_target(pending, cache_dir=cache_dir, quick=True)


def test_calibration_fills_every_pending_figure(host: Target) -> None:
    assert host.pending_figures() == ()
    assert host.peak("int8") > 0 and host.peak("float32") > 1e8  # any CPU does 0.1 GFLOP/s
    assert 1e8 < host.bandwidth() <= host.cache()[1]  # type: ignore[index]
    assert host.cache()[0] == llc_bytes()  # type: ignore[index]
    assert 0 < host.kernel_launch_overhead() < 1e-3
    assert "host micro-benchmark" in host.sources["peak_flops.float32"]
    assert "quick mode" in host.sources["memory_bandwidth"]


def test_calibration_describes_this_cpu_for_tvm(host: Target) -> None:
    tvm_target = host.tvm_target_dict
    assert tvm_target["kind"] == "llvm"
    assert tvm_target["num-cores"] == calibration.usable_cores()
    assert tvm_target["mtriple"].endswith("-linux-gnu")
    assert host.tvm_target().kind.name == "llvm"  # TVM accepts the detected target
    flags = calibration.cpu_flags()
    if "avx512f" in flags and calibration.cpu_model().startswith("AMD"):
        assert tvm_target["mcpu"] in ("znver4", "znver5")


def test_cpus_with_native_low_precision_gain_that_dtype(host: Target) -> None:
    extra = native_extra_dtypes(calibration.cpu_flags())
    assert host.supported_dtypes == ("float32", "int8", *extra)
    for dtype in extra:
        assert host.peak(dtype) > 0
    assert native_extra_dtypes(frozenset({"avx512_bf16"})) == ["bfloat16"]
    assert native_extra_dtypes(frozenset({"asimdhp"})) == ["float16"]


def test_cache_file_is_keyed_json_and_reused(host: Target, cache_dir: Path) -> None:
    path = calibration.cache_path(cache_dir)
    assert path.parent == cache_dir
    key = calibration.host_key()
    assert path.name == f"host-{key}.json"
    assert f"-{calibration.usable_cores()}c-" in key
    document = json.loads(path.read_text())
    assert document["format"] == calibration.FORMAT and document["quick"] is True
    assert document["cpu_model"] == calibration.cpu_model()
    assert not list(cache_dir.glob("*.tmp"))  # the atomic write left nothing behind
    before = path.stat().st_mtime_ns
    again = get_target("host", cache_dir=cache_dir)  # loaded, not measured again
    assert again.peak_flops == host.peak_flops and again.digest() == host.digest()
    assert path.stat().st_mtime_ns == before
    listed = load_targets(cache_dir=cache_dir)["host"]  # listing applies the cache too
    assert listed.pending_figures() == () and listed.bandwidth() == host.bandwidth()


def test_key_separates_machine_kinds() -> None:
    assert calibration.host_key("AMD EPYC", 2) != calibration.host_key("AMD EPYC", 4)
    assert calibration.host_key("AMD EPYC", 2) != calibration.host_key("AMD EPYC 9654", 2)
    assert calibration.host_key("AMD EPYC", 2) == calibration.host_key("AMD EPYC", 2)
    zen3 = frozenset({"avx2", "fma", "f16c", "sse4_2"})
    zen4 = zen3 | {"avx512f", "avx512_vnni", "avx512_bf16"}
    # the same model name on two microarchitectures: separate entries
    assert calibration.host_key("AMD EPYC", 2, zen3) != calibration.host_key("AMD EPYC", 2, zen4)
    # flags that do not change the kernels do not split the cache
    assert (calibration.host_key("AMD EPYC", 2, zen3)
            == calibration.host_key("AMD EPYC", 2, zen3 | {"hypervisor"}))
    # x86's smep is no Arm SME: a kernel-security flag must not split the cache either
    assert calibration.isa_flags(zen3 | {"smep", "smap"}) == ["avx2", "f16c", "fma"]
    assert calibration.isa_flags(frozenset({"asimd", "sme", "sme2"})) == ["asimd", "sme", "sme2"]


def test_default_cache_dir_follows_xdg(tmp_path: Path) -> None:
    assert calibration.default_cache_dir({"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "optc"
    assert calibration.default_cache_dir({}) == Path.home() / ".cache" / "optc"


def test_unreadable_or_old_cache_is_ignored(host: Target, cache_dir: Path,
                                            tmp_path: Path) -> None:
    path = calibration.cache_path(tmp_path)
    path.write_text("{not json")
    assert calibration.load_calibration(path) is None
    path.write_text(json.dumps({"format": calibration.FORMAT + 1}))
    assert calibration.load_calibration(path) is None
    pending = load_target_file(SHIPPED / "host.toml")
    assert calibration.apply_cached(pending, tmp_path) is pending


def test_figures_the_file_gives_win_over_measured_ones(host: Target, cache_dir: Path,
                                                       tmp_path: Path) -> None:
    text = (SHIPPED / "host.toml").read_text()
    text = text.replace('memory_bandwidth = "measured"', "memory_bandwidth = 5e10", 1)
    text = text.replace('target = { kind = "llvm" }',
                        'target = { kind = "llvm", mcpu = "x86-64-v3" }', 1)
    text = text.replace('memory_bandwidth = "host micro-benchmark (pending)"',
                        'memory_bandwidth = "a STREAM run by the user"', 1)
    path = tmp_path / "host.toml"
    path.write_text(text)
    own = calibration.apply_cached(load_target_file(path), cache_dir)
    assert own.bandwidth() == 5e10
    assert own.tvm_target_dict["mcpu"] == "x86-64-v3"  # a spelled-out TVM target is kept
    assert own.peak("float32") == host.peak("float32")
    assert own.pending_figures() == ()


def test_fitted_efficiency_is_stored_and_applied(host: Target, cache_dir: Path,
                                                 tmp_path: Path) -> None:
    private = tmp_path / "cache"
    private.mkdir()
    entry = calibration.load_calibration(calibration.cache_path(cache_dir))
    assert isinstance(entry, Calibration)
    calibration.save_calibration(entry, calibration.cache_path(private))
    calibration.save_efficiency({"conv": 0.4, "elementwise": 0.8}, "fit on 5 models", private)
    fitted = get_target("host", cache_dir=private)
    assert dict(fitted.efficiency) == {"conv": 0.4, "elementwise": 0.8}
    assert fitted.sources["efficiency"] == "fit on 5 models"
    assert fitted.peak_flops == host.peak_flops


def test_pending_host_figures_stay_pending_without_a_cache(tmp_path: Path) -> None:
    host = get_target("host", load_targets(cache_dir=tmp_path), calibrate=False)
    assert host.peak_flops["float32"] == MEASURED
    assert not os.listdir(tmp_path)
