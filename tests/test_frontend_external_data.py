"""External tensor data: loaded from inside the model's folder only, and checked for size."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import optc
from optc.errors import InvalidModelError

WEIGHT = np.random.default_rng(0).standard_normal((64, 32)).astype(np.float32)
BIAS = np.linspace(-1, 1, 32, dtype=np.float32)


def linear_model() -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w", "b"], ["y"])], "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 32])],
        initializer=[numpy_helper.from_array(WEIGHT, "w"), numpy_helper.from_array(BIAS, "b")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def save_external(folder: Path, location: str = "weights.bin") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.onnx"
    onnx.save_model(linear_model(), str(path), save_as_external_data=True,
                    all_tensors_to_one_file=True, location=location, size_threshold=0)
    return path


def point_data_at(model_path: Path, location: str) -> None:
    """Rewrite every external reference of the saved model to ``location``."""
    model = onnx.load(str(model_path), load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    model_path.write_bytes(model.SerializeToString())


def test_external_data_loads_and_matches(tmp_path: Path) -> None:
    path = save_external(tmp_path / "m")
    assert (tmp_path / "m" / "weights.bin").stat().st_size >= WEIGHT.nbytes + BIAS.nbytes
    assert path.stat().st_size < WEIGHT.nbytes, "weights really are outside the model file"
    graph = optc.load_onnx(path)
    np.testing.assert_array_equal(graph.params["w"], WEIGHT)
    np.testing.assert_array_equal(graph.params["b"], BIAS)
    x = np.random.default_rng(1).standard_normal((2, 64)).astype(np.float32)
    got = ort.InferenceSession(optc.to_onnx(graph).SerializeToString()).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, x @ WEIGHT + BIAS, rtol=1e-5, atol=1e-5)


def test_data_in_a_subfolder_is_allowed(tmp_path: Path) -> None:
    (tmp_path / "m" / "data").mkdir(parents=True)
    path = save_external(tmp_path / "m", location="data/weights.bin")
    np.testing.assert_array_equal(optc.load_onnx(path).params["w"], WEIGHT)


def test_parent_folder_location_is_refused(tmp_path: Path) -> None:
    path = save_external(tmp_path / "m")
    os.replace(tmp_path / "m" / "weights.bin", tmp_path / "x.bin")  # the file exists there
    point_data_at(path, "../x.bin")
    with pytest.raises(InvalidModelError, match=r"external data path '\.\./x\.bin' escapes the "
                                                r"model's folder"):
        optc.load_onnx(path)


def test_absolute_location_is_refused(tmp_path: Path) -> None:
    path = save_external(tmp_path / "m")
    point_data_at(path, str(tmp_path / "m" / "weights.bin"))  # even inside the folder
    with pytest.raises(InvalidModelError, match="is absolute; it must be relative"):
        optc.load_onnx(path)


def test_symlink_out_of_the_folder_is_refused(tmp_path: Path) -> None:
    path = save_external(tmp_path / "m")
    os.replace(tmp_path / "m" / "weights.bin", tmp_path / "outside.bin")
    (tmp_path / "m" / "weights.bin").symlink_to(tmp_path / "outside.bin")
    with pytest.raises(InvalidModelError, match=r"'weights\.bin' escapes the model's folder"):
        optc.load_onnx(path)


def test_symlink_inside_the_folder_is_refused_clearly(tmp_path: Path) -> None:
    # onnx's own reader refuses links even inside the folder; optc says why in one line.
    path = save_external(tmp_path / "m")
    os.replace(tmp_path / "m" / "weights.bin", tmp_path / "m" / "real.bin")
    (tmp_path / "m" / "weights.bin").symlink_to("real.bin")
    with pytest.raises(InvalidModelError, match=r"'weights\.bin' is a symbolic link"):
        optc.load_onnx(path)


def test_missing_data_file(tmp_path: Path) -> None:
    path = save_external(tmp_path / "m")
    (tmp_path / "m" / "weights.bin").unlink()
    with pytest.raises(InvalidModelError, match=r"external data file 'weights\.bin' not found "
                                                r"next to the model"):
        optc.load_onnx(path)


def test_truncated_data_file(tmp_path: Path) -> None:
    path = save_external(tmp_path / "m")
    data = tmp_path / "m" / "weights.bin"
    data.write_bytes(data.read_bytes()[: WEIGHT.nbytes // 2])
    with pytest.raises(InvalidModelError, match=r"'weights\.bin' is shorter than offset\+length "
                                                r"\(\d+\+\d+\); the file is truncated"):
        optc.load_onnx(path)


def test_location_missing(tmp_path: Path) -> None:
    path = save_external(tmp_path / "m")
    model = onnx.load(str(path), load_external_data=False)
    tensor = model.graph.initializer[0]
    keep = [e for e in tensor.external_data if e.key != "location"]
    del tensor.external_data[:]
    tensor.external_data.extend(keep)
    path.write_bytes(model.SerializeToString())
    with pytest.raises(InvalidModelError, match="external data without a location"):
        optc.load_onnx(path)
