"""Fitting the host roofline to measured generated models (``optc.cost.host_fit``)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from optc.cost import RooflineModel, calibration, host_fit
from optc.latency.dataset import graph_for, load_dataset
from optc.target import get_target
from optc.target_file import EFFICIENCY_CLASSES

SHIPPED = Path(host_fit.__file__).resolve().parents[1] / "latency" / "data" / "host_fit_v1.jsonl.gz"


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache directory holding a real (quick) calibration of this machine."""
    cache = tmp_path_factory.mktemp("cache")
    calibration.calibrate_target(get_target("host", calibrate=False), cache, quick=True)
    return cache


def test_fit_recovers_a_device_and_is_stored(calibrated: Path) -> None:
    """Rows of the shipped generated models timed as a device with known efficiencies
    would time them (the roofline is exact for it): the fit must find that device."""
    host = get_target("host", cache_dir=calibrated)
    truth = host.with_efficiency({c: 0.6 for c in EFFICIENCY_CLASSES} | {"conv": 0.5,
                                  "matmul": 0.3}, source="test")
    # The ordinary generated models (rebuilding a wide one takes seconds).
    shipped = [r for r in host_fit.generated_rows(SHIPPED) if not r.model.startswith("gen:wide")]
    rows = [dataclasses.replace(r, latency_s=RooflineModel().estimate(graph_for(r), truth)
                                .latency_s) for r in shipped[:16]]
    report = host_fit.fit_rows(rows, "fitted on the shipped rows", cache_dir=calibrated)
    assert report.models == 16
    assert report.mape_at_peak > 40  # the peaks alone are far off such a device
    assert report.mape_fitted < 2
    assert report.calibration.efficiency["conv"] == pytest.approx(0.5, rel=0.05)
    assert report.calibration.efficiency["matmul"] == pytest.approx(0.3, rel=0.05)
    host = get_target("host", cache_dir=calibrated)
    assert dict(host.efficiency) == pytest.approx(dict(report.calibration.efficiency))
    assert all(0 < v <= 1 for v in host.efficiency.values())
    assert host.sources["efficiency"] == "fitted on the shipped rows"
    assert "memory_bandwidth" in report.calibration.fitted_figures
    assert host.bandwidth() == report.calibration.fitted_figures["memory_bandwidth"]


def test_only_generated_rows_of_the_device_are_fitted(tmp_path: Path) -> None:
    every = load_dataset(SHIPPED)
    assert {r.device for r in host_fit.generated_rows(SHIPPED)} == {host_fit.DEVICE}
    assert host_fit.generated_rows(SHIPPED, "ort-2t") == [
        r for r in every if r.device == "ort-2t" and r.model.startswith("gen:")]
    assert host_fit.generated_rows(tmp_path / "absent.jsonl.gz") == []


def test_fit_without_rows_or_with_negative_counts_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no measured rows"):
        host_fit.fit_rows([], "nothing", cache_dir=tmp_path)
    with pytest.raises(ValueError, match=">= 0"):
        host_fit.collect_rows(tmp_path / "rows.jsonl.gz", -1, 2)


def test_rows_file_is_keyed_like_the_calibration(tmp_path: Path) -> None:
    assert host_fit.rows_path(tmp_path).name == f"host-fit-{calibration.host_key()}.jsonl.gz"
    assert host_fit.rows_path(tmp_path).parent == calibration.cache_path(tmp_path).parent
