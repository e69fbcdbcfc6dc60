"""The NPU target's BYOC partition (TVM's example_npu pattern table) agrees with the roofline.

Real models: the bundled digits CNN and onnx's SqueezeNet, quantized to int8 QDQ by
onnxruntime's static quantizer (calibrated on real digits and on scikit-learn's sample
photos), and the digits CNN through optc's own mixed-precision pass at 8 bits: the
npu-example NPU computes in int8 only, so float models stay on its CPU.

TVM 0.27's wheel has no example_npu code generator or runtime (and upstream's runtime
only logs, it computes nothing), so the NPU regions are built as host code: the library
for the Raspberry Pi is checked for its machine type, and the same partition built for
this machine is run against the reference interpreter.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from pass_support import assert_outputs_close, run_reference
from test_codegen_support import EM_AARCH64, elf_machine
from test_compile_support import cache_dir, folder_state  # noqa: F401 (a fixture)
from tvm.ir import IRModule

from optc import zoo
from optc.cli.main import cli
from optc.codegen import build, host_target, load_artifact, run, write_artifact
from optc.codegen.importer import import_graph, input_specs
from optc.codegen.npu import CPU, NPU, ONNX_TO_RELAX, NpuSpec, partition
from optc.compiler import compile_model
from optc.cost import RooflineModel
from optc.errors import UserInputError
from optc.frontend import load_onnx, save_onnx
from optc.ir.graph import Graph
from optc.pipeline import PassContext, parse_pipeline
from optc.target import Target, get_target

ort_quant = pytest.importorskip("onnxruntime.quantization")

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "models"
DIGITS = EXAMPLES / "digits_cnn.onnx"


# -- models ------------------------------------------------------------------------------
class _Feeds(ort_quant.CalibrationDataReader):
    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self.feeds = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.feeds, None)


def quantize_qdq(graph: Graph, feeds: list[dict[str, np.ndarray]], folder: Path) -> Graph:
    """int8 QDQ (activations and weights) by onnxruntime's static quantizer."""
    source, quantized = folder / "fp32.onnx", folder / "qdq.onnx"
    save_onnx(graph, source)
    ort_quant.quantize_static(str(source), str(quantized), _Feeds(feeds),
                              quant_format=ort_quant.QuantFormat.QDQ,
                              activation_type=ort_quant.QuantType.QInt8,
                              weight_type=ort_quant.QuantType.QInt8)
    return load_onnx(quantized)


@pytest.fixture(scope="module")
def npu() -> Target:
    return get_target("npu-example")


@pytest.fixture(scope="module")
def digits_qdq(tmp_path_factory: pytest.TempPathFactory) -> Graph:
    images = np.load(EXAMPLES / "digits_test.npz")["input"][:32]
    feeds = [{"input": images[i:i + 1]} for i in range(len(images))]
    return quantize_qdq(load_onnx(DIGITS), feeds, tmp_path_factory.mktemp("digits"))


def _weight_bytes_seconds(graph: Graph, _ctx: PassContext) -> float:
    """Stored weight bytes at a nominal 1 GB/s: every narrower weight is faster."""
    return graph.param_bytes() / 1e9


@pytest.fixture(scope="module")
def digits_mixed() -> Graph:
    """optc's mixed-precision pass, 8-bit layers, calibrated on real digits, priced by
    weight bytes (an accelerator's view). The host's proxy keeps the 3x3 convs fp32
    (optc's CPU int8 kernel for them is slower than its float one), and the NPU's
    roofline finds a 25 us model dominated by the transfers around each int8 region."""
    data = np.load(EXAMPLES / "digits_test.npz")
    ctx = PassContext(calibration={"input": data["input"][:64], "labels": data["labels"][:64]},
                      analyses={"latency": _weight_bytes_seconds})
    pipeline = parse_pipeline("fold-constants,fold-batchnorm,eliminate-dead-code,"
                              "mixed-precision{bits=8}")
    return pipeline.run(load_onnx(DIGITS), ctx).graph


@pytest.fixture(scope="module")
def squeezenet_qdq(tmp_path_factory: pytest.TempPathFactory) -> Graph:
    graph = load_onnx(zoo.light_model_path("squeezenet"))
    feeds = [{graph.inputs[0].name: zoo.sample_photo(i)} for i in range(2)]
    return quantize_qdq(graph, feeds, tmp_path_factory.mktemp("squeezenet"))


def relax_module(graph: Graph) -> IRModule:
    return import_graph(graph, input_specs(graph, None))


# -- the roofline's side -----------------------------------------------------------------
def roofline_placement(graph: Graph, target: Target) -> tuple[Counter[str], Counter[str], int]:
    """``(Relax ops the roofline's NPU nodes import as, ONNX ops on the CPU, transfers)``.

    A Conv or Gemm with a bias imports as the contraction plus an ``add``; views
    (Flatten, Dropout) have no kernel. Transfers are recovered from each row's link time.
    """
    rows = RooflineModel().breakdown(graph, target).nodes
    bandwidth = target.fallback_figure("link_bandwidth")
    latency = target.fallback_figure("link_latency")
    npu_ops: Counter[str] = Counter()
    for node, row in zip(graph.nodes, rows, strict=True):
        if row.device != NPU or row.op not in ONNX_TO_RELAX:
            continue
        rank = len(graph.value(node.inputs[0]).shape or ())
        npu_ops["relax.nn.conv1d" if node.op == "Conv" and rank == 3
                else ONNX_TO_RELAX[node.op][-1 if node.op == "Conv" else 0]] += 1
        if node.op in ("Conv", "Gemm") and len(node.inputs) > 2 and node.inputs[2]:
            npu_ops["relax.add"] += 1
    cpu_ops = Counter(r.op for r in rows if r.device == CPU and r.kernel)
    transfers = sum(round((r.transfer_s - r.transfer_bytes / bandwidth) / latency) for r in rows)
    return npu_ops, cpu_ops, transfers


# -- partition ---------------------------------------------------------------------------
@pytest.mark.parametrize("model", ["digits_qdq", "digits_mixed", "squeezenet_qdq"])
def test_partition_agrees_with_the_roofline(model: str, npu: Target,
                                            request: pytest.FixtureRequest) -> None:
    graph = request.getfixturevalue(model)
    parted, report = partition(relax_module(graph), NpuSpec.of(npu))
    npu_ops, cpu_ops, transfers = roofline_placement(graph, npu)
    assert report.npu_ops == dict(npu_ops)  # the same nodes on the NPU
    assert report.crossings == transfers  # and the same tensors over the link
    assert report.regions >= 1 and report.npu_code == "host-emulation"
    # NPU regions hold example_npu composites; the rest stays in main as CPU code.
    regions = [f for f in parted.functions.values() if (f.attrs or {}).get("Codegen")]
    assert len(regions) >= 1 and {str(f.attrs["Codegen"]) for f in regions} == {"example_npu"}
    assert {"example_npu.conv2d", "example_npu.quantize",
            "example_npu.dequantize"} <= set(report.composites)
    fallback = {"GlobalAveragePool": "relax.mean", "Concat": "relax.concat"}
    views = {"relax.reshape"}  # a Flatten of a CPU tensor: a view in the roofline, no kernel
    assert {fallback[op]: n for op, n in cpu_ops.items()} == {
        op: n for op, n in report.cpu_ops.items() if op not in views}


def test_float_model_stays_on_the_cpu(npu: Target) -> None:
    """An int8-only NPU takes nothing of a float32 model, in the partition as in the roofline."""
    graph = load_onnx(DIGITS)
    _, report = partition(relax_module(graph), NpuSpec.of(npu))
    npu_ops, _, transfers = roofline_placement(graph, npu)
    assert report.regions == 0 and not report.npu_ops and not npu_ops
    assert report.crossings == transfers == 0
    assert report.cpu_ops["relax.nn.conv2d"] == 3


def test_whole_pattern_table_by_name() -> None:
    """By backend name alone: TVM's table, every dtype (the float convolutions go)."""
    _, report = partition(relax_module(load_onnx(DIGITS)), "example_npu")
    assert report.npu_ops["relax.nn.conv2d"] == 3 and report.npu_ops["relax.matmul"] == 1
    assert report.cpu_ops == {"relax.mean": 1, "relax.reshape": 1}  # GlobalAveragePool, Flatten


def test_unknown_backend_is_one_line(npu: Target) -> None:
    with pytest.raises(UserInputError, match="unknown BYOC backend 'no_such_npu'") as info:
        build(load_onnx(DIGITS), npu.tvm_target_dict, byoc="no_such_npu")
    assert info.value.exit_code == 2 and "\n" not in str(info.value)


def test_declared_op_without_pattern_refused(npu: Target) -> None:
    spec = NpuSpec("example_npu", frozenset({"Conv", "LayerNormalization"}), ("int8",))
    with pytest.raises(UserInputError, match="cannot offload declared ops LayerNormalization"):
        partition(relax_module(load_onnx(DIGITS)), spec)


# -- build -------------------------------------------------------------------------------
def test_raspberry_pi_library(digits_qdq: Graph, npu: Target, tmp_path: Path) -> None:
    built = build(digits_qdq, npu.tvm_target_dict, cross_compiler=npu.cross_compiler,
                  byoc=NpuSpec.of(npu))
    assert built.partition is not None and built.partition.regions >= 1
    assert built.library_arch == "aarch64"
    assert elf_machine(built.export_library(tmp_path / "model.so")) == EM_AARCH64


def test_same_partition_runs_here(digits_qdq: Graph, npu: Target, tmp_path: Path) -> None:
    """Built for this machine's CPU, the partitioned model computes what the interpreter does."""
    built = build(digits_qdq, host_target(), byoc=NpuSpec.of(npu))
    assert built.partition is not None and built.partition.npu_code == "host-emulation"
    images = np.load(EXAMPLES / "digits_test.npz")["input"][:1]
    outputs = run(load_artifact(write_artifact(built, tmp_path / "artifact")), {"input": images})
    assert_outputs_close(run_reference(digits_qdq, {"input": images}), outputs)


def test_optc_compile_for_the_npu(digits_mixed: Graph, tmp_path: Path,
                                  cache_dir: Path) -> None:  # noqa: F811
    """``optc compile`` end to end: partitioned, cross-compiled, not run (aarch64)."""
    model, out = tmp_path / "digits_int8.onnx", tmp_path / "npu"
    save_onnx(digits_mixed, model)
    result = CliRunner().invoke(cli, ["compile", str(model), "--target", "npu-example", "-o",
                                      str(out), "--json"],
                                env={"XDG_CACHE_HOME": str(cache_dir)})
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["measured"] is None and "aarch64" in report["measured_reason"]
    assert elf_machine(out / "model.so") == EM_AARCH64
    partition_record = report["partition"]
    assert partition_record["byoc"] == "example_npu" and partition_record["regions"] >= 1
    assert partition_record["npu_ops"]["relax.nn.conv2d"] == 3


def test_target_with_unknown_backend_fails_cleanly(npu: Target, tmp_path: Path) -> None:
    """A target naming a BYOC backend TVM lacks: one line, exit 2, nothing written."""
    (tmp_path / "model.txt").write_text("a neighbour that must stay")
    before = folder_state(tmp_path)
    target = dataclasses.replace(npu, tvm_byoc="no_such_npu")
    with pytest.raises(UserInputError, match="unknown BYOC backend 'no_such_npu'") as info:
        compile_model(DIGITS, target, tmp_path / "out")
    assert info.value.exit_code == 2
    assert folder_state(tmp_path) == before and not (tmp_path / "out").exists()
