"""Model files that are not (valid) ONNX models are refused with a one-line InvalidModelError."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import optc
from optc.errors import EXIT_BAD_INPUT, InvalidModelError

LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
SQUEEZENET = LIGHT / "light_squeezenet.onnx"


def refused(path: Path, message: str) -> InvalidModelError:
    with pytest.raises(InvalidModelError) as info:
        optc.load_onnx(path)
    text = str(info.value)
    assert message in text, text
    assert "\n" not in text and info.value.exit_code == EXIT_BAD_INPUT
    return info.value


def test_truncated_model_file(tmp_path: Path) -> None:
    path = tmp_path / "cut.onnx"
    path.write_bytes(SQUEEZENET.read_bytes()[:5000])
    error = refused(path, "not a readable ONNX model")
    assert str(path) in str(error)


def test_garbage_bytes(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for size in (7, 100, 4096):
        path = tmp_path / f"garbage{size}.onnx"
        path.write_bytes(rng.integers(0, 256, size, dtype=np.uint8).tobytes())
        with pytest.raises(InvalidModelError, match=str(path)):
            optc.load_onnx(path)


def test_text_file(tmp_path: Path) -> None:
    path = tmp_path / "notes.onnx"
    path.write_text("graph g { this is not protobuf }\n")
    with pytest.raises(InvalidModelError):
        optc.load_onnx(path)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.onnx"
    path.write_bytes(b"")
    refused(path, "not an ONNX model (no graph found)")


def test_directory(tmp_path: Path) -> None:
    refused(tmp_path, "is a directory, not an ONNX model file")


def test_missing_path(tmp_path: Path) -> None:
    refused(tmp_path / "nope.onnx", "no such model file")


def test_every_corruption_of_a_real_model_is_refused_cleanly(tmp_path: Path) -> None:
    # Flip single bits of a real model: each copy must load or fail with an OptcError,
    # never with a stray exception from onnx, protobuf or numpy.
    raw = bytearray(SQUEEZENET.read_bytes())
    rng = np.random.default_rng(1)
    path = tmp_path / "flipped.onnx"
    loaded = refused_count = 0
    for position in rng.integers(0, len(raw), 150):
        corrupt = bytearray(raw)
        corrupt[position] ^= 1 << int(rng.integers(0, 8))
        path.write_bytes(bytes(corrupt))
        try:
            optc.load_onnx(path)
            loaded += 1
        except InvalidModelError:
            refused_count += 1
    assert loaded and refused_count, (loaded, refused_count)


def test_model_the_checker_rejects() -> None:
    node = helper.make_node("NoSuchOp", ["x"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", 1, [1])],
                              [helper.make_tensor_value_info("y", 1, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(InvalidModelError, match=r"invalid ONNX model: .*NoSuchOp"):
        optc.from_onnx(model)


def test_tensor_with_the_wrong_amount_of_data() -> None:
    short = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[4],
                        raw_data=np.zeros(2, np.float32).tobytes())  # 2 floats for 4
    graph = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
                              initializer=[short])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(InvalidModelError, match=r"invalid ONNX model: .*\(tensor name: w\) "
                                                r"raw_data size \(8 bytes\) is too small"):
        optc.from_onnx(model, infer_shapes=False)


def test_model_local_functions_are_refused_clearly() -> None:
    body = helper.make_function("local", "Twice", ["a"], ["b"],
                                [helper.make_node("Add", ["a", "a"], ["b"])],
                                [helper.make_opsetid("", 17)])
    graph = helper.make_graph([helper.make_node("Twice", ["x"], ["y"], domain="local")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    model = helper.make_model(graph, functions=[body], opset_imports=[
        helper.make_opsetid("", 17), helper.make_opsetid("local", 1)])
    with pytest.raises(InvalidModelError, match=r"model-local ONNX functions .*\(Twice\)"):
        optc.from_onnx(model)
