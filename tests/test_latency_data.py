"""The latency dataset: generated architectures, devices, file format, collection."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from optc.errors import UserInputError
from optc.frontend import to_onnx
from optc.interp import run_numpy
from optc.ir import verify
from optc.latency.arch import FAMILIES, MAX_MACS, MIN_MACS, ArchSpec, reference_specs, sample_specs
from optc.latency.collect import collect
from optc.latency.dataset import (
    FORMAT,
    VERSION,
    Sample,
    by_device,
    graph_for,
    load_dataset,
    read_dataset,
    save_dataset,
)
from optc.latency.devices import make_devices
from optc.latency.runners import feeds_for

TINY = {
    "cnn": {"resolution": 32, "stem": 8, "stem_kernel": 3, "maxpool": True, "pool": "avg",
            "act": "hardswish", "classes": 10,
            "blocks": [["mbconv", 5, 2, 16, 4], ["mbconv", 3, 1, 16, 3], ["res", 3, 2, 24, 1],
                       ["bottleneck", 1, 1, 32, 1], ["dw", 7, 1, 32, 1], ["conv", 3, 1, 16, 1]]},
    "transformer": {"seq": 16, "hidden": 32, "heads": 2, "layers": 2, "ffn": 2, "act": "gelu",
                    "pre_norm": False, "vocab": 100, "classes": 3},
    "mlp": {"batch": 2, "features": 32, "hidden": [64, 16], "act": "silu", "norm": True,
            "classes": 5},
}


def tiny(family: str, seed: int = 0) -> ArchSpec:
    return ArchSpec(family, TINY[family], seed)


def test_sampler_is_deterministic_and_sized() -> None:
    first, again, other = sample_specs(12, 3), sample_specs(12, 3), sample_specs(12, 4)
    assert [s.key() for s in first] == [s.key() for s in again]
    assert {s.key() for s in first} != {s.key() for s in other}
    assert len({s.key() for s in first}) == 12
    assert all(MIN_MACS <= s.macs() <= MAX_MACS for s in first)
    # A longer draw with the same seed extends the shorter one: collections resume.
    assert [s.key() for s in sample_specs(20, 3)[:12]] == [s.key() for s in first]
    assert {s.family for s in sample_specs(30, 0)} == set(FAMILIES)


def test_reference_specs_are_fixed_and_diverse() -> None:
    specs = reference_specs()
    assert len(specs) == 10 and len({s.key() for s in specs}) == 10
    assert {s.family for s in specs} == set(FAMILIES)
    assert [s.key() for s in specs] == [s.key() for s in reference_specs()]
    assert all(MIN_MACS <= s.macs() <= MAX_MACS for s in specs)


def test_spec_json_round_trip_keeps_the_key() -> None:
    spec = sample_specs(1, 7)[0]
    back = ArchSpec.from_json(json.loads(json.dumps(spec.to_json())))
    assert back == spec and back.key() == spec.key() and back.key().startswith("gen:")
    with pytest.raises(UserInputError, match="unknown architecture family"):
        ArchSpec("rnn", {}, 0)
    with pytest.raises(UserInputError, match="not an architecture spec"):
        ArchSpec.from_json({"family": "cnn"})


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_family_builds_verifies_and_runs(family: str) -> None:
    spec = tiny(family)
    graph = spec.build()
    verify(graph, types=True)
    assert graph.name == spec.key()
    assert spec.build().structural_hash() == graph.structural_hash()  # deterministic
    assert tiny(family, seed=1).build().structural_hash() != graph.structural_hash()
    feeds = feeds_for(graph)
    ours = run_numpy(graph, feeds)["output"]
    session = ort.InferenceSession(to_onnx(graph).SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    theirs = session.run(["output"], feeds)[0]
    assert ours.shape == theirs.shape and np.isfinite(ours).all()
    np.testing.assert_allclose(ours, theirs, rtol=1e-3, atol=1e-4)


def sample(model: str, device: str, latency: float, spec: dict | None = None) -> Sample:
    return Sample(model, spec, "ab" * 32, device, latency, latency * 1.2, 5, 1e6, 2e5,
                  latency * 0.9)


@pytest.mark.parametrize("name", ["data.jsonl", "data.jsonl.gz"])
def test_dataset_round_trip(tmp_path: Path, name: str) -> None:
    spec = tiny("mlp").to_json()
    samples = [sample("gen:mlp:1", "ort-1t", 1e-3, spec), sample("zoo:minilm", "ort-1t", 2e-3),
               sample("gen:mlp:1", "tvm-1t", 3e-3, spec)]
    path = save_dataset(tmp_path / name, samples, {"cpu": "test"})
    head, back = read_dataset(path)
    assert back == samples
    assert head["format"] == FORMAT and head["version"] == VERSION
    assert head["machine"] == {"cpu": "test"}
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no staging file left behind
    assert {k: [s.latency_s for s in v] for k, v in by_device(back).items()} == {
        "ort-1t": [1e-3, 2e-3], "tvm-1t": [3e-3]}


@pytest.mark.parametrize(("content", "message"), [
    (b"", "empty file"),
    (b"not json\n", "first line is not JSON"),
    (b'{"format": "other"}\n', "not an optc-latency dataset"),
    (b'{"format": "optc-latency", "version": 99}\n', "version 99 is not supported"),
    (b'{"format": "optc-latency", "version": 1}\n{"model": "x"}\n', ":2: bad sample row"),
])
def test_bad_files_are_one_line_errors(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(content)
    with pytest.raises(UserInputError, match=message) as caught:
        load_dataset(path)
    assert "\n" not in str(caught.value)


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="does not exist"):
        load_dataset(tmp_path / "missing.jsonl")
    broken = tmp_path / "broken.jsonl.gz"
    broken.write_bytes(b"plain text, not gzip")
    with pytest.raises(UserInputError, match="not a readable latency dataset"):
        load_dataset(broken)
    truncated = tmp_path / "truncated.jsonl.gz"
    truncated.write_bytes(gzip.compress(b'{"format": "optc-latency", "version": 1}\n')[:-12])
    with pytest.raises(UserInputError, match="not a readable latency dataset"):
        load_dataset(truncated)


def test_device_names_are_checked() -> None:
    with pytest.raises(UserInputError, match="unknown device 'gpu-1t'"):
        make_devices(["gpu-1t"])
    with pytest.raises(UserInputError, match="needs --rpc-tracker"):
        make_devices(["rpc:rasp4b"])
    with pytest.raises(UserInputError, match="named twice"):
        make_devices(["ort-1t", "ort-1t"])


@pytest.mark.parametrize("device", ["torch-1t", "ort-int8-1t"])
def test_other_devices_measure(device: str) -> None:
    median, p90 = make_devices([device])[0].measure(tiny("transformer").build(), 3)
    assert 0 < median <= p90 < 1.0


def test_tiny_collection_resumes(tmp_path: Path) -> None:
    out = tmp_path / "tiny.jsonl.gz"
    specs = [tiny("mlp"), tiny("cnn")]
    devices = make_devices(["ort-1t", "tvm-1t"])
    samples = collect(specs, devices, out, repeat=3)
    assert sorted((s.model, s.device) for s in samples) == sorted(
        (spec.key(), d) for spec in specs for d in ("ort-1t", "tvm-1t"))
    for row in samples:
        assert row.repeats == 3 and 0 < row.min_s <= row.latency_s <= row.p90_s < 1.0
        assert row.flops > 0 and row.bytes > 0
    assert load_dataset(out) == samples
    assert graph_for(samples[0]).structural_hash() == samples[0].graph_hash
    # How TVM's pool ran is recorded with the numbers (a pinned pool is another device).
    pool = read_dataset(out)[0]["machine"]["tvm_thread_pool"]
    assert set(pool) == {"TVM_NUM_THREADS", "TVM_BIND_THREADS", "TVM_THREAD_POOL_SPIN_COUNT"}
    # Everything is in the file already: nothing is measured again.
    assert collect(specs, devices, out, repeat=3) == samples


def test_cli_two_threads_in_a_fresh_process(tmp_path: Path) -> None:
    """The command end to end; TVM's pool gets two threads only in a fresh process."""
    out = tmp_path / "cli.jsonl"
    script = ("import sys; from optc.cli.latency_collect import command; "
              "command(sys.argv[1:])")
    args = ["--no-reference", "--models", "0", "--onnx", str(_digits_like(tmp_path)),
            "--devices", "tvm-1t,tvm-2t,ort-2t", "--repeat", "2", "-o", str(out)]
    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = load_dataset(out)
    assert sorted(r.device for r in rows) == ["ort-2t", "tvm-1t", "tvm-2t"]
    assert "1 models, 3 devices" in done.stdout


def test_cli_wide_models_are_the_large_family(tmp_path: Path) -> None:
    """``--wide N`` adds N models of the ``wide`` family (the size of the large real CNNs)
    after the ordinary ones, measured like them."""
    from click.testing import CliRunner

    from optc.cli.latency_collect import command
    from optc.latency.arch import LARGE_MIN_MACS, sample_large_specs

    out = tmp_path / "wide.jsonl"
    args = ["--no-reference", "--models", "0", "--wide", "1", "--devices", "ort-1t",
            "--repeat", "1", "-o", str(out)]
    result = CliRunner().invoke(command, args)
    assert result.exit_code == 0, result.output
    rows = load_dataset(out)
    (expected,) = sample_large_specs(1, seed=0)
    assert [(r.model, r.device) for r in rows] == [(expected.key(), "ort-1t")]
    assert expected.macs() >= LARGE_MIN_MACS and rows[0].flops >= 2 * LARGE_MIN_MACS


def _digits_like(folder: Path) -> Path:
    from optc.frontend import save_onnx

    return save_onnx(tiny("cnn", seed=5).build(), folder / "cnn.onnx")


def test_rpc_device_times_on_the_tracker_device() -> None:
    """``rpc:<key>``: built for the host target and timed by a server on 127.0.0.1."""
    from rpc_loopback import HOST, loopback_tracker

    from optc.compiler.rpc import RpcTracker

    key = "optc-latency-test"
    with loopback_tracker(key) as port:
        device = make_devices([f"rpc:{key}"], rpc=RpcTracker(HOST, port, key))[0]
        median, p90 = device.measure(tiny("mlp").build(), 3)
    assert device.name == f"rpc:{key}" and 0 < median <= p90 < 1.0


DATA = Path(__file__).resolve().parents[1] / "optc" / "latency" / "data"


@pytest.mark.parametrize("name", ["meta_train_v1", "meta_train_v2", "meta_train_v2_retest"])
def test_shipped_meta_training_set(name: str) -> None:
    """Every device has the reference models; the real models are held out; graphs rebuild."""
    samples = load_dataset(DATA / f"{name}.jsonl.gz")
    groups = by_device(samples)
    assert len(groups) >= 5
    references = {spec.key() for spec in reference_specs()}
    for device, rows in groups.items():
        assert references <= {row.model for row in rows}, device
        assert all(0 < row.latency_s <= row.p90_s and row.repeats >= 10 for row in rows)
    assert all(row.model.startswith("gen:") and row.spec is not None for row in samples)
    for row in samples[:: len(samples) // 3][:3]:  # a few rebuilt: same graph as measured
        assert graph_for(row).structural_hash() == row.graph_hash


def test_the_retest_measured_the_same_models_on_the_same_devices() -> None:
    """``meta_train_v2_retest`` is the measurement floor of ``meta_train_v2``: the same
    graphs, devices and settings, measured again in another session."""
    first_head, first = read_dataset(DATA / "meta_train_v2.jsonl.gz")
    again_head, again = read_dataset(DATA / "meta_train_v2_retest.jsonl.gz")
    assert {(s.device, s.graph_hash) for s in first} == {(s.device, s.graph_hash) for s in again}
    assert first_head["machine"] == again_head["machine"]
    assert first_head["machine"]["tvm_thread_pool"]["TVM_BIND_THREADS"] == "1"
    assert first_head["created"] < again_head["created"]
    assert {s.repeats for s in first} == {s.repeats for s in again} == {100}


def test_shipped_wide_set() -> None:
    """The large-model supplement: the reference models plus 20 ``wide`` models on every
    device, each rebuilding to the graph that was measured."""
    samples = load_dataset(DATA / "wide_v1.jsonl.gz")
    groups = by_device(samples)
    references = {spec.key() for spec in reference_specs()}
    assert len(groups) == 6
    for device, rows in groups.items():
        models = {row.model for row in rows}
        assert references <= models and len(models - references) == 20, device
        assert all(0 < row.latency_s <= row.p90_s and row.repeats >= 10 for row in rows)
    wide = [row for row in samples if row.model.startswith("gen:wide:")]
    assert len(wide) == 120 and graph_for(wide[0]).structural_hash() == wide[0].graph_hash


def test_shipped_host_evaluation_set() -> None:
    samples = load_dataset(DATA / "host_real_v2.jsonl.gz")
    models = {row.model for row in samples}
    assert {"zoo:minilm", "zoo:efficientnet-lite0", "zoo:digits-cnn"} <= models
    assert all(model.startswith("zoo:") for model in models)
    digits = next(row for row in samples if row.model == "zoo:digits-cnn")
    assert graph_for(digits).structural_hash() == digits.graph_hash


TINY_WIDE = {"resolution": 32, "stem": [8, 3, 1], "stages": [[8, 1], [16, 2]], "kernel": 3,
             "pool_to": 2, "fc": [32], "classes": 10}


def test_large_family_builds_runs_and_counts_its_macs() -> None:
    from optc.cost import RooflineModel
    from optc.latency.arch import ALL_FAMILIES, LARGE_FAMILIES
    from optc.target import get_target

    assert set(LARGE_FAMILIES) == {"wide"} and set(ALL_FAMILIES) == {*FAMILIES, "wide"}
    spec = ArchSpec("wide", TINY_WIDE, 0)
    graph = spec.build()
    verify(graph, types=True)
    feeds = feeds_for(graph)
    ours = run_numpy(graph, feeds)["output"]
    session = ort.InferenceSession(to_onnx(graph).SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(ours, session.run(["output"], feeds)[0], rtol=1e-3, atol=1e-4)
    assert ours.shape == (1, 10)
    rows = RooflineModel().breakdown(graph, get_target("rasp4b")).nodes
    contractions = sum(r.flops for r in rows if r.op in ("Conv", "Gemm", "MatMul")) / 2
    # 3x3 stem 3->8 at 32x32, then 8->8 at 16x16, 8->16 and 16->16 at 8x8, FC 64->32->10
    macs = 3 * 8 * 9 * 1024 + 8 * 8 * 9 * 256 + (8 * 16 + 16 * 16) * 9 * 64 + 64 * 32 + 32 * 10
    assert spec.macs() == macs
    biases = 8 * 1024 + 8 * 256 + 2 * 16 * 64 + 32 + 10  # one add per output, half a MAC
    assert contractions == macs + biases / 2


def test_large_specs_are_sized_and_leave_the_small_sampler_alone() -> None:
    from optc.latency.arch import LARGE_MAX_MACS, LARGE_MIN_MACS, sample_large_specs

    specs = sample_large_specs(6, 1)
    assert [s.key() for s in specs] == [s.key() for s in sample_large_specs(6, 1)]
    assert len({s.key() for s in specs}) == 6 and {s.family for s in specs} == {"wide"}
    assert all(LARGE_MIN_MACS <= s.macs() <= LARGE_MAX_MACS for s in specs)
    # batch-1 fully connected layers of at least 4 MB: their weights stream from memory
    assert all(s.params["fc"] and min(s.params["fc"]) >= 1024 for s in specs)
    assert "wide" not in {s.family for s in sample_specs(60, 0)}


def test_shipped_host_fit_set() -> None:
    """The generated models the host roofline is fitted on (never real models): large
    ``wide`` ones and ordinary ones, measured on one machine."""
    samples = load_dataset(DATA / "host_fit_v1.jsonl.gz")
    wide = [row for row in samples if row.model.startswith("gen:wide:")]
    assert len(wide) >= 8 and len(samples) > len(wide)
    assert all(row.model.startswith("gen:") and row.device == "tvm-2t" for row in samples)
    assert all(0 < row.latency_s <= row.p90_s for row in samples)
    # The range of the large real CNNs, in work (ResNet-50: 8.2 GFLOP) whatever machine
    # measured them, and beyond every ordinary row in time.
    assert max(row.flops for row in wide) > 8e9
    ordinary = [row for row in samples if row not in wide]
    assert max(row.latency_s for row in wide) > 5 * max(row.latency_s for row in ordinary)
    for row in (min(wide, key=lambda r: r.flops), min(samples, key=lambda r: r.flops)):
        assert graph_for(row).structural_hash() == row.graph_hash
