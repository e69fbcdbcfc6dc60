"""Small kernels merged into one (``optc.codegen.small_kernels``) on the bundled digits and
Fashion-MNIST CNNs: the merged build calls fewer kernels and computes bit for bit what the
one-kernel-per-group build does, float32 and int8 alike; and ``build``'s compiled Relax
VM (``exec_mode="compiled"``) through a written and loaded artifact."""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

import numpy as np
import pytest
import tvm
from tvm import relax

import optc
from optc.codegen import build, host_target, load_artifact, run, write_artifact
from optc.codegen.build import BuiltModule
from optc.codegen.relax_pipeline import cpu_schedule
from optc.codegen.small_kernels import _tensor_bytes, merge_small_kernels
from optc.pipeline import PassContext, parse_pipeline

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "models"
FOLD = "fold-constants,fold-batchnorm,eliminate-dead-code"
_CALL = re.compile(r"^\s*call\s+(\S+)")


def folded(name: str) -> optc.Graph:
    return parse_pipeline(FOLD).run(optc.load_onnx(EXAMPLES / f"{name}_cnn.onnx")).graph


def images(name: str, count: int = 8) -> np.ndarray:
    return np.load(EXAMPLES / f"{name}_test.npz")["input"][:count].astype(np.float32)


@pytest.fixture(scope="module")
def host() -> dict:
    return host_target()


@pytest.fixture(scope="module")
def digits_mixed() -> optc.Graph:
    """The digits CNN through the mixed-precision pass (cheap sensitivity, as
    ``benchmarks/quantize_vs_ort.py --fast``): int8 convolutions and classifier."""
    from optc.quant import Options, quantize_mixed
    from optc.quant.kernels import int8_code_bits

    data = np.load(EXAMPLES / "digits_test.npz")
    options = Options(hutchinson_samples=1, sensitivity_samples=2, dependencies=False)
    options = dataclasses.replace(options, int8_code_bits=int8_code_bits(host_target()))
    calibration = {"input": data["input"][:64], "labels": data["labels"][:64]}
    mixed, report = quantize_mixed(folded("digits"), PassContext(calibration=calibration), options)
    assert report is not None and any(p.startswith("w") for p in report.bits().values())
    return mixed


def kernel_calls(built: BuiltModule) -> list[str]:
    """The kernels ``main`` calls, in order (a bytecode executable's instructions)."""
    calls = [_CALL.match(line) for line in built.executable.as_text().splitlines()]
    return [m.group(1) for m in calls if m and not m.group(1).startswith("vm.builtin.")]


def outputs(built: BuiltModule, batch: np.ndarray) -> np.ndarray:
    machine = relax.VirtualMachine(built.executable, tvm.cpu())
    return np.concatenate(
        [machine["main"](tvm.runtime.tensor(x[None], tvm.cpu())).numpy() for x in batch]
    )


def unmerged(graph: optc.Graph, host: dict) -> BuiltModule:
    """One kernel per fused group, as before merging."""
    return build(graph, host, merge=False)


@pytest.mark.parametrize("which", ["fp32", "mixed"])
def test_digits_runs_as_one_kernel_bit_for_bit(
    which: str, host: dict, digits_mixed: optc.Graph
) -> None:
    graph = folded("digits") if which == "fp32" else digits_mixed
    before = unmerged(graph, host)
    merged = build(graph, host)
    assert len(kernel_calls(before)) >= 6  # convs, pool, mean, classifier (+ quantize)
    assert len(kernel_calls(merged)) == 1  # every tensor of this model is small
    batch = images("digits")
    np.testing.assert_array_equal(outputs(merged, batch), outputs(before, batch))


def test_large_tensors_keep_their_kernels(host: dict) -> None:
    """Fashion-MNIST's first conv writes 28 x 28 x 32 floats (100 KB, over
    ``SMALL_OUTPUT_BYTES``): that kernel stays its own call, the small ones merge."""
    before = unmerged(folded("fashion"), host)
    merged = build(folded("fashion"), host)
    count = len(kernel_calls(merged))
    assert 1 < count < len(kernel_calls(before))
    batch = images("fashion", 4)
    np.testing.assert_array_equal(outputs(merged, batch), outputs(before, batch))


def test_merge_threshold_and_group_size() -> None:
    """On the scheduled module: no small kernel, no change; groups of at most
    ``max_group`` kernels."""
    seen: list[tvm.IRModule] = []

    def record(mod: tvm.IRModule, target: tvm.target.Target) -> tvm.IRModule:
        seen.append(cpu_schedule(mod, target))
        return seen[-1]

    build(folded("digits"), host_target(), schedule=record, fuse=True)
    scheduled = seen[0]
    count = len([f for _, f in scheduled.functions_items() if isinstance(f, tvm.tirx.PrimFunc)])
    labels = _patterns(scheduled)
    assert merge_small_kernels(scheduled, max_bytes=0).same_as(scheduled)
    assert _called(merge_small_kernels(scheduled)) == 1
    assert _called(merge_small_kernels(scheduled, max_group=2)) == (count + 1) // 2
    assert _patterns(scheduled) == labels  # the fusion labels stay off the input module


def _patterns(mod: tvm.IRModule) -> dict[str, object]:
    return {
        gvar.name_hint: None if func.attrs is None else func.attrs.get("op_pattern")
        for gvar, func in mod.functions_items()
        if isinstance(func, tvm.tirx.PrimFunc)
    }


def _called(mod: tvm.IRModule) -> int:
    """``call_tir`` bindings in ``main``."""
    call_tir = tvm.ir.Op.get("relax.call_tir")
    found = []
    relax.analysis.post_order_visit(
        mod["main"].body,
        lambda e: found.append(e) if isinstance(e, relax.Call) and e.op.same_as(call_tir) else None,
    )
    return len(found)


def test_compiled_vm_artifact_matches_bytecode(
    host: dict, tmp_path: Path, digits_mixed: optc.Graph
) -> None:
    """Built with ``main`` compiled, written, loaded and run as an artifact, the mixed
    digits CNN gives the bytecode build's outputs exactly."""
    compiled = build(digits_mixed, host, exec_mode="compiled")
    assert kernel_calls(compiled) == []  # no bytecode: main is a function of the library
    loaded = load_artifact(write_artifact(compiled, tmp_path / "artifact"))
    batch = images("digits", 4)
    got = np.concatenate([run(loaded, {"input": x[None]})[compiled.outputs[0].name] for x in batch])
    np.testing.assert_array_equal(got, outputs(build(digits_mixed, host), batch))


def test_boolean_and_sub_byte_tensors_are_never_small() -> None:
    """A boolean buffer inside a merged function lowers to code LLVM rejects (MiniLM's
    attention mask, TVM 0.27): a kernel writing one keeps its own call."""
    assert _tensor_bytes(relax.TensorType((2, 8), "int8")) == [16.0]
    assert _tensor_bytes(relax.TensorType((2, 8), "float32")) == [64.0]
    assert _tensor_bytes(relax.TensorType((2, 8), "bool")) == [math.inf]
    assert _tensor_bytes(relax.TensorType((2, 8), "int4")) == [math.inf]
