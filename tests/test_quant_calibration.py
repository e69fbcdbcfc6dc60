"""Calibration data: the bundled digits test set loads; every kind of bad file is a clear
one-line UserInputError (CLI exit code 2); the synthetic fallback is deterministic."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

import optc
from optc.errors import EXIT_BAD_INPUT, UserInputError
from optc.ir.graph import Graph
from optc.quant import LABELS, Calibration, load_calibration, synthetic_calibration
from optc.quant.calibration import calibration_from_mapping, resolve_calibration

MODELS = Path(__file__).resolve().parent.parent / "examples" / "models"


@pytest.fixture(scope="module")
def digits() -> Graph:
    return optc.load_onnx(MODELS / "digits_cnn.onnx")


def test_loads_the_bundled_test_set(digits: Graph) -> None:
    calibration = load_calibration(MODELS / "digits_test.npz", digits)
    assert calibration.size == 450
    assert calibration.inputs["input"].shape == (450, 1, 8, 8)
    assert calibration.labels is not None and calibration.labels.dtype == np.int64
    assert not calibration.synthetic
    assert set(calibration.as_mapping()) == {"input", LABELS}
    assert calibration.subset(10).size == 10
    assert calibration.subset(1000) is calibration


def _npz(tmp_path: Path, **arrays: np.ndarray) -> Path:
    path = tmp_path / "calib.npz"
    np.savez(path, **arrays)
    return path


def _images(n: int = 4, shape: tuple[int, ...] = (1, 8, 8), dtype: str = "float32",
            ) -> np.ndarray:
    return np.random.default_rng(0).random((n, *shape)).astype(dtype)


BAD_FILES = {
    "missing input": ({"image": _images()}, r"no array for model input\(s\) \['input'\]"),
    "unknown array": ({"input": _images(), "extra": _images()},
                      r"arrays \['extra'\] are not inputs of the model"),
    "wrong shape": ({"input": _images(shape=(1, 28, 28))},
                    r"has shape \(4, 1, 28, 28\), the model expects \('N', 1, 8, 8\)"),
    "wrong rank": ({"input": _images(shape=(8, 8))}, r"the model expects \('N', 1, 8, 8\)"),
    "wrong dtype": ({"input": _images(dtype="float64")},
                    r"is float64, the model expects float32"),
    "no samples": ({"input": _images(n=0)}, r"has no samples"),
    "float labels": ({"input": _images(), LABELS: np.zeros(4)},
                     r"'labels' must hold integer class indices"),
    "short labels": ({"input": _images(), LABELS: np.zeros(3, np.int64)},
                     r"'labels' has shape \(3,\), expected 4 samples first"),
    "negative labels": ({"input": _images(), LABELS: -np.ones(4, np.int64)},
                        r"negative class indices"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_calibration_files(case: str, digits: Graph, tmp_path: Path) -> None:
    arrays, message = BAD_FILES[case]
    with pytest.raises(UserInputError, match=message) as info:
        load_calibration(_npz(tmp_path, **arrays), digits)
    assert info.value.exit_code == EXIT_BAD_INPUT
    assert "\n" not in str(info.value)


def test_missing_file(digits: Graph, tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="does not exist"):
        load_calibration(tmp_path / "nothing.npz", digits)


@pytest.mark.parametrize("writer", ["text", "npy"])
def test_not_an_npz(writer: str, digits: Graph, tmp_path: Path) -> None:
    path = tmp_path / "calib.npz"
    if writer == "text":
        path.write_text("input,label\n0.1,3\n")
    else:
        with path.open("wb") as handle:  # a single .npy array under an .npz name
            np.save(handle, _images())
    with pytest.raises(UserInputError, match=r"is not an \.npz archive"):
        load_calibration(path, digits)


def test_inputs_must_agree_on_samples() -> None:
    two = optc.parse_graph("""graph g {
      opset "" = 17
      input %a: float32[1,3]
      input %b: float32[1,3]
      %c: float32[1,3] = Add(%a, %b)
      output %c: float32[1,3]
    }""")
    with pytest.raises(UserInputError, match="disagree on the number of samples"):
        calibration_from_mapping({"a": np.zeros((2, 3), np.float32),
                                  "b": np.zeros((3, 3), np.float32)}, two)


def test_synthetic_fallback_is_deterministic_and_warns(
        digits: Graph, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="optc.quant.calibration"):
        first = synthetic_calibration(digits, samples=5, seed=3)
    assert "synthetic" in caplog.text
    second = synthetic_calibration(digits, samples=5, seed=3)
    assert first.synthetic and first.labels is None
    assert first.inputs["input"].shape == (5, 1, 8, 8)
    assert first.inputs["input"].dtype == np.float32
    np.testing.assert_array_equal(first.inputs["input"], second.inputs["input"])
    # standard normal: mean near 0, spread near 1 over 320 values
    assert abs(float(first.inputs["input"].mean())) < 0.2
    assert 0.8 < float(first.inputs["input"].std()) < 1.2


def test_synthetic_integer_and_symbolic_inputs() -> None:
    tokens = optc.parse_graph("""graph g {
      opset "" = 17
      input %ids: int64[1,"seq"]
      %y: int64[1,"seq"] = Identity(%ids)
      output %y: int64[1,"seq"]
    }""")
    calibration = synthetic_calibration(tokens, samples=3)
    ids = calibration.inputs["ids"]
    assert ids.dtype == np.int64 and ids.shape == (3, 16)
    assert ids.min() >= 0 and ids.max() < 16


def test_resolve_prefers_given_data(digits: Graph) -> None:
    given = {"input": _images(6), LABELS: np.arange(6, dtype=np.int64)}
    calibration = resolve_calibration(digits, given, samples=4)
    assert isinstance(calibration, Calibration) and calibration.size == 4
    assert calibration.labels is not None and list(calibration.labels) == [0, 1, 2, 3]
    assert resolve_calibration(digits, None, samples=100).synthetic
