"""Int8 matmuls that read one quantized activation run as one (``quantized.
_MergeSharedActivation``) when ``merge_matmuls`` is on: MiniLM's Q, K and V projections.

On the real first attention block of MiniLM-L6 (7-bit codes, what ``optc.quant`` emits
for x86 without VNNI), quantized per layer as ``optc.quant.emit`` does: with the merge the
three projections are one int8 contraction and the module makes fewer kernel launches,
the output is bit for bit the unmerged build's and matches onnxruntime on the QDQ model;
where the projections read differently quantized activations nothing is merged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import model_zoo
import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from test_codegen_quantized import (
    W8A8,
    assert_close_to_onnxruntime,
    calibrated,
    compile_and_capture,
    cut,
    folded,
    int8_contractions,
    run_tvm,
)

import optc
from optc.frontend.onnx_export import to_onnx
from optc.ir.graph import Graph
from optc.quant.emit import emit
from optc.quant.layers import quantizable_layers

tvm = pytest.importorskip("tvm")
from optc.codegen.build import BuiltModule, build  # noqa: E402  (needs TVM)
from optc.codegen.host_cpu import host_target  # noqa: E402
from optc.codegen.quantized import prepare_quantized  # noqa: E402
from optc.codegen.relax_pipeline import default_schedule  # noqa: E402
from optc.codegen.schedules import prepare_cpu  # noqa: E402
from optc.fusion.kernel_count import kernel_calls  # noqa: E402


@pytest.fixture(scope="module")
def attention(tmp_path_factory: pytest.TempPathFactory) -> tuple[Graph, dict[str, np.ndarray]]:
    """MiniLM-L6's embeddings and first self-attention up to its output projection, every
    projection w8a8 with 7-bit codes (Q, K and V read one quantized LayerNorm output)."""
    full = folded(model_zoo.minilm_onnx(tmp_path_factory, dynamo=False))
    graph = cut(full, quantizable_layers(full)[3].key)  # attention output projection
    feeds = model_zoo.minilm_inputs()
    layers, ranges = calibrated(graph, feeds)
    assignment = {layer.key: W8A8 for layer in layers}
    return emit(graph, layers, assignment, ranges, int8_code_bits=7), feeds


def _unmerged(mod: Any, target: Any) -> Any:
    return prepare_cpu(prepare_quantized(mod, target, merge_matmuls=False), target)


def _unmerged_build(graph: Graph) -> tuple[BuiltModule, Any]:
    """``compile_and_capture`` with the merge off."""
    seen: dict[str, Any] = {}

    def schedule(mod: Any, target: Any) -> Any:
        seen["mod"] = default_schedule(mod, target)
        return seen["mod"]

    built = build(graph, dict(host_target()), prepare=_unmerged, schedule=schedule, fuse=True)
    return built, seen["mod"]


def _launches(built: BuiltModule) -> int:
    return sum(kernel_calls(built.executable).values())


def _requantize_key_projection(graph: Graph, folder: Path) -> Graph:
    """``graph`` with the key projection reading its own quantize of the LayerNorm output
    (1.5x the scale): Q and V still share one quantized activation, K does not."""
    model = to_onnx(graph)
    nodes = list(model.graph.node)
    key = next(n for n in nodes if n.op_type == "MatMul" and "/key/" in n.output[0])
    dq = next(n for n in nodes if n.output[0] == key.input[0])
    q = next(n for n in nodes if n.output[0] == dq.input[0])
    inits = {t.name: t for t in model.graph.initializer}
    scale = numpy_helper.to_array(inits[q.input[1]]) * np.float32(1.5)
    model.graph.initializer.append(numpy_helper.from_array(scale, "key.act.scale"))
    zero = q.input[2] if len(q.input) > 2 else ""
    own_q = onnx.helper.make_node("QuantizeLinear", [q.input[0], "key.act.scale", zero],
                                  ["key.act.q"])
    own_dq = onnx.helper.make_node("DequantizeLinear", ["key.act.q", "key.act.scale", zero],
                                   ["key.act.dq"])
    key.input[0] = "key.act.dq"
    at = nodes.index(key)
    del model.graph.node[:]
    model.graph.node.extend([*nodes[:at], own_q, own_dq, *nodes[at:]])
    path = folder / "key_requantized.onnx"
    onnx.save(model, path)
    return optc.load_onnx(path)


def test_qkv_projections_merge_into_one_int8_matmul(attention: tuple) -> None:
    graph, feeds = attention
    merged, merged_mod = compile_and_capture(graph)
    unmerged, unmerged_mod = _unmerged_build(graph)
    # Q, K and V: one int8 contraction instead of three (the output projection stays)
    assert len(int8_contractions(unmerged_mod)) == 4
    assert len(int8_contractions(merged_mod)) == 2
    # one matmul + rescale launch instead of three; the slices fuse into the consumers
    assert _launches(merged) == _launches(unmerged) - 2
    got = run_tvm(merged, feeds)
    # each output column's arithmetic is unchanged: integer accumulation, its own scale
    np.testing.assert_array_equal(got, run_tvm(unmerged, feeds))
    assert_close_to_onnxruntime(graph, got, feeds, 0.03)


def test_differently_quantized_activations_are_not_merged(
    attention: tuple, tmp_path: Path
) -> None:
    """K reads its own quantize of the LayerNorm output: only Q and V merge."""
    graph = _requantize_key_projection(attention[0], tmp_path)
    feeds = attention[1]
    merged, merged_mod = compile_and_capture(graph)
    unmerged, unmerged_mod = _unmerged_build(graph)
    assert len(int8_contractions(unmerged_mod)) == 4
    assert len(int8_contractions(merged_mod)) == 3  # Q+V, K, output projection
    got = run_tvm(merged, feeds)
    np.testing.assert_array_equal(got, run_tvm(unmerged, feeds))
    assert_close_to_onnxruntime(graph, got, feeds, 0.03)
