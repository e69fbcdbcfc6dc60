"""save_onnx: atomic writes, external data on request, clear errors; export is lossless."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import optc
from optc.errors import UserInputError
from optc.frontend import onnx_export
from optc.ir import Graph, structurally_equal

LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"


@pytest.fixture(scope="module")
def densenet() -> Graph:
    return optc.load_onnx(LIGHT / "light_densenet121.onnx")


@pytest.fixture(scope="module")
def mlp() -> Graph:
    """Two 256x256 layers: weights big enough to go to external data (256 KiB each)."""
    rng = np.random.default_rng(0)
    layers = []
    for i, src in enumerate(("x", "h")):
        layers.append(helper.make_node("Gemm", [src, f"w{i}", f"b{i}"], ["h" if i == 0 else "y"]))
    inits = [numpy_helper.from_array(rng.standard_normal((256, 256)).astype(np.float32) / 16,
                                     f"w{i}") for i in range(2)]
    inits += [numpy_helper.from_array(np.full(256, 0.1 * i, np.float32), f"b{i}")
              for i in range(2)]
    graph = helper.make_graph(layers, "mlp",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 256])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 256])],
                              initializer=inits)
    return optc.from_onnx(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


def test_save_writes_one_file_and_no_leftovers(tmp_path: Path, densenet: Graph) -> None:
    target = tmp_path / "out.onnx"
    assert optc.save_onnx(densenet, target) == target
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.onnx"]
    onnx.checker.check_model(str(target), full_check=True)
    assert structurally_equal(optc.load_onnx(target), densenet)


def test_save_replaces_an_existing_file(tmp_path: Path, densenet: Graph) -> None:
    target = tmp_path / "out.onnx"
    target.write_bytes(b"old contents")
    optc.save_onnx(densenet, target)
    assert structurally_equal(optc.load_onnx(target), densenet)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.onnx"]


def test_external_data_on_request(tmp_path: Path, mlp: Graph) -> None:
    target = tmp_path / "big.onnx"
    optc.save_onnx(mlp, target, external_data=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.onnx", "big.onnx.data"]
    assert target.stat().st_size < 10_000 < (tmp_path / "big.onnx.data").stat().st_size
    loaded = optc.load_onnx(target)
    assert structurally_equal(loaded, mlp)
    x = np.random.default_rng(1).standard_normal((4, 256)).astype(np.float32)
    want = (x @ mlp.params["w0"] + mlp.params["b0"]) @ mlp.params["w1"] + mlp.params["b1"]
    got = ort.InferenceSession(str(target)).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_big_graphs_pick_external_data_by_themselves(tmp_path: Path, mlp: Graph,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    # The threshold is 1 GiB; lower it rather than allocate a 1 GiB model in a unit test.
    monkeypatch.setattr(onnx_export, "EXTERNAL_DATA_THRESHOLD", mlp.param_bytes() - 1)
    optc.save_onnx(mlp, tmp_path / "auto.onnx")
    assert (tmp_path / "auto.onnx.data").is_file()
    monkeypatch.setattr(onnx_export, "EXTERNAL_DATA_THRESHOLD", mlp.param_bytes())
    optc.save_onnx(mlp, tmp_path / "small.onnx")
    assert not (tmp_path / "small.onnx.data").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["auto.onnx", "auto.onnx.data",
                                                          "small.onnx"]


def test_tiny_graph_with_external_data_still_loads(tmp_path: Path) -> None:
    # No tensor passes the 1 KiB threshold: no data file, and nothing left behind.
    graph = optc.parse_graph('graph g {\n  opset "" = 17\n  input %x: float32[2]\n'
                             '  param %b: float32[2] = [1.0, 2.0]\n'
                             '  %y: float32[2] = Add(%x, %b)\n  output %y: float32[2]\n}\n')
    optc.save_onnx(graph, tmp_path / "tiny.onnx", external_data=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.onnx"]
    assert structurally_equal(optc.load_onnx(tmp_path / "tiny.onnx"), graph)


def test_bad_targets_are_user_errors_and_leave_nothing(tmp_path: Path, densenet: Graph) -> None:
    with pytest.raises(UserInputError, match=r"output folder .* does not exist"):
        optc.save_onnx(densenet, tmp_path / "missing" / "m.onnx")
    (tmp_path / "folder.onnx").mkdir()
    with pytest.raises(UserInputError, match="is a directory"):
        optc.save_onnx(densenet, tmp_path / "folder.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder.onnx"]
    assert not any((tmp_path / "folder.onnx").iterdir())


@pytest.mark.parametrize("path", sorted(LIGHT.glob("*.onnx")), ids=lambda p: p.stem)
def test_export_then_import_is_lossless(path: Path) -> None:
    graph = optc.load_onnx(path)
    again = optc.from_onnx(optc.to_onnx(graph))
    assert structurally_equal(again, graph)


def test_metadata_and_names_survive(tmp_path: Path, densenet: Graph) -> None:
    tagged = densenet.replace(metadata={"source": "light densenet", "optc.note": "ü"})
    optc.save_onnx(tagged, tmp_path / "tagged.onnx")
    model = onnx.load(str(tmp_path / "tagged.onnx"))
    assert {p.key: p.value for p in model.metadata_props} == dict(tagged.metadata)
    assert model.producer_name == "optc" and model.graph.name == densenet.name
    x = np.linspace(0, 1, 3 * 224 * 224, dtype=np.float32).reshape(1, 3, 224, 224)
    session = ort.InferenceSession(str(tmp_path / "tagged.onnx"))
    assert session.run(None, {densenet.input_names[0]: x})[0].shape == (1, 1000, 1, 1)
