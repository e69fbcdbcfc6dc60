"""fuse: golden rewrites, cases where it must not fire, numerics against onnxruntime and the
reference interpreter, pass options and candidates."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from pass_support import (
    assert_outputs_close,
    golden,
    op_count,
    run_onnxruntime,
    run_reference,
)

import optc
from optc.errors import UserInputError
from optc.fusion import DEFAULT_FAMILIES, FAMILIES
from optc.ir.annotations import FusionGroup
from optc.ir.graph import Graph
from optc.passes.fuse import Fuse
from optc.pipeline import PassContext

CASES = ("gelu_epilogue", "conv_bn_relu6", "attention")


def fuse(graph: Graph, **options: object) -> Graph:
    """Every family unless told otherwise (the golden files show GELU as one op too)."""
    options.setdefault("families", FAMILIES)
    after = Fuse(**options).run(graph, PassContext())  # type: ignore[arg-type]
    optc.verify(after, types=True)
    onnx.checker.check_model(optc.to_onnx(after), full_check=True)
    return after


def groups(graph: Graph) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for node in graph.nodes:
        for a in node.annotations:
            if isinstance(a, FusionGroup):
                found.setdefault(a.group, []).append(node.op)
    return found


@pytest.mark.parametrize("case", CASES)
def test_golden(case: str) -> None:
    before, after = golden("fuse", case)
    assert optc.print_graph(fuse(optc.parse_graph(before))) == after


def golden_feeds(graph: Graph, rng: np.random.Generator) -> dict[str, np.ndarray]:
    feeds = {v.name: rng.normal(size=v.shape).astype(np.float32) for v in graph.inputs}
    if "mask" in feeds:  # an additive attention mask: 0 keeps a key, -1e4 drops it
        feeds["mask"] = np.array([0.0, -1e4, 0.0, 0.0], np.float32).reshape(1, 1, 2, 2)
    return feeds


@pytest.mark.parametrize("case", CASES)
def test_golden_numerics(case: str) -> None:
    graph = optc.parse_graph(golden("fuse", case)[0])
    feeds = golden_feeds(graph, np.random.default_rng(4))
    after = fuse(graph)
    expected = run_onnxruntime(graph, feeds)
    assert_outputs_close(expected, run_onnxruntime(after, feeds))
    assert_outputs_close(expected, run_reference(after, feeds))


def test_fully_masked_row_keeps_the_exporters_zeros() -> None:
    """A query whose every key is masked with -inf: softmax is NaN, the guard makes it 0."""
    graph = optc.parse_graph(golden("fuse", "attention")[0])
    feeds = golden_feeds(graph, np.random.default_rng(5))
    feeds["mask"] = np.array([-np.inf, -np.inf, 0.0, 0.0], np.float32).reshape(1, 1, 2, 2)
    after = fuse(graph)
    expected = run_reference(graph, feeds)["o2"]
    assert np.all(expected[0, 0] == 0.0)
    np.testing.assert_allclose(run_reference(after, feeds)["o2"], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(run_onnxruntime(after, feeds)["o2"], expected, rtol=1e-5,
                               atol=1e-6)


# -- must not fire -------------------------------------------------------------------------

HEADER = """graph g {
  opset "" = 17
  input %x: float32[1,2,2]
  param %sqrt2: float32[] = [1.4142135381698608]
  param %one: float32[] = [1.0]
  param %half: float32[] = [0.5]
  param %third: float32[] = [0.3333]
"""

NO_GELU = {
    "wrong constant": """
      %d: float32[1,2,2] = Div(%x, %third)
      %e: float32[1,2,2] = Erf(%d)
      %p: float32[1,2,2] = Add(%e, %one)
      %h: float32[1,2,2] = Mul(%x, %p)
      %y: float32[1,2,2] = Mul(%h, %half)
      output %y: float32[1,2,2]""",
    "intermediate is read elsewhere": """
      %d: float32[1,2,2] = Div(%x, %sqrt2)
      %e: float32[1,2,2] = Erf(%d)
      %p: float32[1,2,2] = Add(%e, %one)
      %h: float32[1,2,2] = Mul(%x, %p)
      %y: float32[1,2,2] = Mul(%h, %half)
      %z: float32[1,2,2] = Sub(%y, %e)
      output %z: float32[1,2,2]""",
    "erf output is a graph output": """
      %d: float32[1,2,2] = Div(%x, %sqrt2)
      %e: float32[1,2,2] = Erf(%d)
      %p: float32[1,2,2] = Add(%e, %one)
      %h: float32[1,2,2] = Mul(%x, %p)
      %y: float32[1,2,2] = Mul(%h, %half)
      output %y: float32[1,2,2]
      output %e: float32[1,2,2]""",
    "multiplies a different tensor": """
      %x2: float32[1,2,2] = Neg(%x)
      %d: float32[1,2,2] = Div(%x, %sqrt2)
      %e: float32[1,2,2] = Erf(%d)
      %p: float32[1,2,2] = Add(%e, %one)
      %h: float32[1,2,2] = Mul(%x2, %p)
      %y: float32[1,2,2] = Mul(%h, %half)
      output %y: float32[1,2,2]""",
}


@pytest.mark.parametrize("case", list(NO_GELU))
def test_gelu_must_not_fire(case: str) -> None:
    graph = optc.parse_graph(HEADER + NO_GELU[case] + "\n}")
    after = fuse(graph, families=("gelu",))
    assert after is graph


NO_ATTENTION = {
    "non-standard scale": ("%s: float32[] = [0.8408964276313782]",
                           "%s: float32[] = [0.5]"),
    "keys not transposed": ("perm=[0, 2, 3, 1]", "perm=[0, 2, 1, 3]"),
    "scores read elsewhere": ("  output %o2: float32[1,2,2]",
                              "  output %o2: float32[1,2,2]\n  output %sc: float32[1,1,2,2]"),
    "projections of different inputs": ('%v0: float32[1,2,2] = MatMul(%x, %wv)',
                                        '%v0: float32[1,2,2] = MatMul(%q1, %wv)'),
}


@pytest.mark.parametrize("case", list(NO_ATTENTION))
def test_attention_must_not_fire(case: str) -> None:
    old, new = NO_ATTENTION[case]
    text = golden("fuse", "attention")[0]
    assert old in text
    graph = optc.parse_graph(text.replace(old, new))
    if case == "keys not transposed":  # the MatMul itself then multiplies [2,2] by [2,2]
        graph = graph.replace(nodes=tuple(
            n.replace(outputs=(n.outputs[0].with_type("float32", (1, 1, 2, 2)),))
            if n.op == "Transpose" and n.outputs[0].name == "k3" else n for n in graph.nodes))
    optc.verify(graph, types=True)
    after = fuse(graph, families=("attention",))
    assert after is graph


def with_residual(reader: str) -> str:
    """The conv_bn_relu6 golden with the conv output also read by ``reader``."""
    return golden("fuse", "conv_bn_relu6")[0].replace(
        '%t: float32[1,3,4,4] = Mul(%z, %s) # "silu/Mul"',
        '%t: float32[1,3,4,4] = Mul(%z, %s) # "silu/Mul"\n  ' + reader).replace(
        "output %t: float32[1,3,4,4]", "output %u: float32[1,3,4,4]")


def test_diamond_inside_one_group() -> None:
    """Every reader of the conv output is in the group (TVM's post-dominator rule)."""
    after = fuse(optc.parse_graph(with_residual(
        '%u: float32[1,3,4,4] = Add(%y, %t) # "residual"')))
    assert list(groups(after).values()) == [["Conv", "Clip", "Sigmoid", "Mul", "Add"]]


def test_groups_stop_at_values_read_outside() -> None:
    """The conv output is also read by a pooling kernel: it must reach memory, so the
    conv stays alone and only the activation chain is fused."""
    text = with_residual('%u: float32[1,3,1,1] = GlobalAveragePool(%y) # "pool"').replace(
        "output %u: float32[1,3,4,4]", "output %t: float32[1,3,4,4]\n  output %u: float32[1,3,1,1]")
    after = fuse(optc.parse_graph(text))
    assert list(groups(after).values()) == [["Clip", "Sigmoid", "Mul"]]


def test_no_families_leaves_the_graph_alone() -> None:
    graph = optc.parse_graph(golden("fuse", "gelu_epilogue")[0])
    assert Fuse(families=()).run(graph, PassContext()) is graph


def test_running_twice_changes_nothing() -> None:
    once = fuse(optc.parse_graph(golden("fuse", "conv_bn_relu6")[0]))
    assert Fuse().run(once, PassContext()) is once


def test_high_threshold_rejects_every_group() -> None:
    graph = optc.parse_graph(golden("fuse", "gelu_epilogue")[0])
    after = fuse(graph, families=("epilogue",), min_saving_us=1e6)
    assert after is graph


def test_unknown_family_is_a_clear_error() -> None:
    with pytest.raises(UserInputError, match="unknown families"):
        Fuse.configure({"families": ["gelu", "loops"]})


def test_candidates_include_a_rewrite_free_variant() -> None:
    graph = optc.parse_graph(golden("fuse", "attention")[0])
    options = [c.families for c in Fuse().candidates(graph, PassContext())]
    assert options[:2] == [DEFAULT_FAMILIES, FAMILIES]
    assert "attention" not in options[2] and "epilogue" in options[2]
    rewrite_free = Fuse(families=options[2]).run(graph, PassContext())
    assert op_count(rewrite_free, "Attention") == 0 and op_count(rewrite_free, "Softmax") == 1


def test_default_fuses_gelu_as_the_matmul_epilogue() -> None:
    """By default GELU stays decomposed (TVM's fast erf) but runs in the MatMul's kernel."""
    graph = optc.parse_graph(golden("fuse", "gelu_epilogue")[0])
    after = fuse(graph, families=DEFAULT_FAMILIES)
    assert list(groups(after).values()) == [["MatMul", "Add", "Div", "Erf", "Add", "Mul", "Mul"]]


# -- other spellings -----------------------------------------------------------------------

GELU_SPELLINGS = {
    "dynamo": """
      %d: float32[1,2,2] = Div(%x, %sqrt2)
      %e: float32[1,2,2] = Erf(%d)
      %p: float32[1,2,2] = Add(%e, %one)
      %h: float32[1,2,2] = Mul(%half, %p)
      %y: float32[1,2,2] = Mul(%x, %h)
      output %y: float32[1,2,2]""",
    "half first, scale by 1/sqrt(2)": """
      %d: float32[1,2,2] = Mul(%x, %rsqrt2)
      %e: float32[1,2,2] = Erf(%d)
      %p: float32[1,2,2] = Add(%one, %e)
      %h: float32[1,2,2] = Mul(%x, %half)
      %y: float32[1,2,2] = Mul(%h, %p)
      output %y: float32[1,2,2]""",
}


@pytest.mark.parametrize("case", list(GELU_SPELLINGS))
@pytest.mark.parametrize("opset", [17, 20])
def test_gelu_spellings(case: str, opset: int) -> None:
    text = HEADER.replace('opset "" = 17', f'opset "" = {opset}') + \
        '  param %rsqrt2: float32[] = [0.7071067690849304]\n' + GELU_SPELLINGS[case] + "\n}"
    graph = optc.parse_graph(text)
    after = fuse(graph, families=("gelu",))
    assert [(n.op, n.domain) for n in after.nodes] == [
        ("Gelu", "" if opset >= 20 else "com.microsoft")]
    feeds = {"x": np.linspace(-3, 3, 4, dtype=np.float32).reshape(1, 2, 2)}
    expected = run_onnxruntime(graph, feeds)
    assert_outputs_close(expected, run_onnxruntime(after, feeds))
    assert_outputs_close(expected, run_reference(after, feeds))


def test_attention_mask_broadcast_over_queries() -> None:
    """A [B, 1, 1, T] key mask (BERT's usual) is expanded to the [B|1, H|1, S, T] bias
    onnxruntime's Attention takes."""
    text = golden("fuse", "attention")[0].replace(
        "input %mask: float32[1,1,2,2]", "input %mask: float32[1,1,1,2]")
    graph = optc.parse_graph(text)
    after = fuse(graph)
    assert op_count(after, "Attention") == 1 and op_count(after, "Expand") == 1
    feeds = {"x": np.random.default_rng(6).normal(size=(1, 2, 2)).astype(np.float32),
             "mask": np.array([0.0, -1e4], np.float32).reshape(1, 1, 1, 2)}
    expected = run_onnxruntime(graph, feeds)
    assert_outputs_close(expected, run_onnxruntime(after, feeds))
    assert_outputs_close(expected, run_reference(after, feeds))


# -- scoring ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("target", "method"), [("orin", "roofline"), (None, "nominal")])
def test_groups_are_scored_by_the_cost_model(target: str | None, method: str) -> None:
    """Conv + ReLU6 + SiLU as one kernel: three launches and three intermediates saved."""
    from optc.fusion.groups import fusion_groups
    from optc.fusion.score import score_groups
    from optc.fusion.view import GraphView
    from optc.target import get_target

    graph = fuse(optc.parse_graph(golden("fuse", "conv_bn_relu6")[0]), families=("batchnorm",))
    found = fusion_groups(GraphView(graph), set(graph.params))
    assert [[n.op for n in g] for g in found] == [["Conv", "Clip", "Sigmoid", "Mul"]]
    (score,) = score_groups(graph, found, get_target(target) if target else None)
    assert score.method == method
    assert score.launches_saved == 3
    # Three 48-float intermediates written once each and read four times (Sigmoid and Mul
    # both read the Clip output): 7 x 192 bytes.
    assert score.bytes_saved == pytest.approx(7 * 48 * 4)
    assert score.saved_s > 0


def test_tvm_generates_the_kernel_the_roofline_predicts() -> None:
    """Conv + BatchNorm + ReLU6 + SiLU: TVM emits one compute kernel, which the roofline
    predicts only once the pass has grouped the nodes (optc's CPU preparation adds the
    NCHW <-> channels-last ``transpose`` kernels around it, which it does not see)."""
    from optc.codegen import build, host_target
    from optc.fusion.kernel_count import compare
    from optc.target import get_target

    orin = get_target("orin")
    graph = optc.parse_graph(golden("fuse", "conv_bn_relu6")[0])
    for candidate, predicted in ((graph, 5), (fuse(graph), 1)):
        found = compare(candidate, build(candidate, host_target()).executable, orin)
        compute = [n for n in found.by_name if not n.startswith("transpose")]
        assert len(compute) == 1 and "conv2d" in compute[0] and "sigmoid" in compute[0]
        assert found.predicted == predicted
