"""optc mixed-precision + TVM vs onnxruntime's static int8 quantization, side by side.

For each model (the digits and Fashion-MNIST CNNs, EfficientNet-Lite0 on real photos,
MiniLM-L6), batch 1, all in one process with the same thread count:

- fp32: optc's TVM build and onnxruntime on the same (BatchNorm-folded) ONNX model;
- optc ``mixed-precision`` (``quantize_mixed``) at its default ``max-drop`` (0.01) on the
  calibration set, compiled with optc's TVM code generator (QDQ layers as
  uint8 x int8 -> int32 contractions, weight-only layers reading int8 codes in the kernel);
- onnxruntime ``quantize_static`` (QDQ format, per-channel int8 weights, uint8
  activations, MinMax calibration on the same calibration set), run by onnxruntime.

Latencies are medians over ``--repeat`` calls after warm-up, the four variants of a model
timed in interleaved rounds (so that a change of load hits them alike); quality is accuracy
on the held-out digits / Fashion-MNIST images (with labels), else top-1 agreement and logit
cosine with the fp32 model (EfficientNet on crops/flips of scikit-learn's two sample
photos), else cosine of the mean-pooled sentence embedding (MiniLM). Library sizes are the
exported ``.so`` files.

    python benchmarks/quantize_vs_ort.py --models digits fashion --repeat 20
    python benchmarks/quantize_vs_ort.py --models efficientnet_lite0 minilm --fast
    python benchmarks/quantize_vs_ort.py --fast --mcpu znver3   # optc code for a Zen 3

``--mcpu`` compiles optc's variants for another LLVM CPU of this architecture (its code
must run here: ``znver3`` on a newer AMD or Intel CPU with AVX2), with the int8 weight
codes its kernel needs (7-bit without AVX-512 VNNI, ``optc.quant.kernels``);
onnxruntime still runs this host's own kernels.

``--fast`` makes the sensitivity analysis cheap (1 Hutchinson sample, 2 sensitivity
samples, no dependency terms): the search itself (bisection inside ``max-drop``) is the
same. Without it EfficientNet-Lite0 takes about an hour on two cores.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from timing import interleaved_medians

import optc
from optc import zoo
from optc.pipeline import PassContext, parse_pipeline
from optc.quant import Options, quantize_mixed

THREADS = 2
MODELS = ("digits", "fashion", "efficientnet_lite0", "minilm")
EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "models"
FOLD = "fold-constants,fold-batchnorm,eliminate-dead-code"
SENTENCES = (
    "A compiler lowers a model to fast code for the device it runs on.",
    "The cat sat quietly on the warm windowsill all afternoon.",
    "Quantized weights make the library smaller and the kernels faster.",
    "It rained in the mountains, so the river rose overnight.",
    "She played the violin at the concert in front of a large crowd.",
    "Stock markets fell sharply after the announcement on Tuesday.",
    "Fresh bread and coffee are the best way to start the morning.",
    "The spacecraft sent back pictures of the rings of Saturn.",
)
Runner = Callable[[dict[str, np.ndarray]], np.ndarray]
Quality = Callable[[list[np.ndarray], list[np.ndarray]], float]


@dataclasses.dataclass(frozen=True)
class Case:
    """A model with calibration samples (batched), batch-1 evaluation feeds and a quality
    measure ``(outputs, fp32 outputs) -> float``."""

    name: str
    graph: optc.Graph
    calibration: dict[str, np.ndarray]
    eval_feeds: list[dict[str, np.ndarray]]
    metric: str
    quality: Quality

    @property
    def calib_size(self) -> int:
        return len(next(iter(self.calibration.values())))


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-30))


def labeled_case(name: str) -> Case:
    """A CNN bundled in examples/models with its held-out test images (``<name>_test.npz``):
    the first 256 calibrate (with labels), the rest measure task accuracy."""
    data = np.load(EXAMPLES / f"{name}_test.npz")
    images, labels = data["input"], data["labels"]
    held_out = labels[256:]

    def accuracy(outs: list[np.ndarray], _ref: list[np.ndarray]) -> float:
        return float(np.mean([o.argmax() == y for o, y in zip(outs, held_out, strict=True)]))

    graph = parse_pipeline(FOLD).run(optc.load_onnx(EXAMPLES / f"{name}_cnn.onnx")).graph
    return Case(name, graph, {"input": images[:256], "labels": labels[:256]},
                [{"input": x[None]} for x in images[256:]], "accuracy", accuracy)


def photo_views() -> np.ndarray:
    """Crops and flips of scikit-learn's two photos, preprocessed as ``zoo.sample_photo``."""
    import torch
    from sklearn.datasets import load_sample_images

    views = []
    for image in load_sample_images().images:
        pixels = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()
        h, w = pixels.shape[2:]
        crops = [pixels, pixels[:, :, h // 8: h * 7 // 8, w // 8:]]
        for crop in crops:
            for view in (crop, crop.flip(3)):
                resized = torch.nn.functional.interpolate(
                    view, size=(zoo.IMAGE_SIZE, zoo.IMAGE_SIZE), mode="bilinear",
                    antialias=True, align_corners=False)
                views.append(((resized - 127.0) / 128.0).numpy().astype(np.float32))
    return np.concatenate(views)


def efficientnet_case(work: Path) -> Case:
    path = zoo.export_efficientnet(work / "effnet.onnx", dynamo=False)
    views = photo_views()

    def agreement(outs: list[np.ndarray], ref: list[np.ndarray]) -> float:
        return float(np.mean([_cosine(o, r) for o, r in zip(outs, ref, strict=True)]))

    graph = parse_pipeline(FOLD).run(optc.load_onnx(path)).graph
    return Case("efficientnet_lite0", graph, {"image": views},
                [{"image": v[None]} for v in views], "logit cos", agreement)


def minilm_case(work: Path) -> Case:
    path = zoo.export_minilm(work / "minilm.onnx", dynamo=False)
    length = zoo.minilm_inputs()["input_ids"].shape[1]  # the export's static length
    tokenizer = zoo.require("transformers", "transformers").AutoTokenizer.from_pretrained(
        zoo._minilm_path())
    encoded = tokenizer(list(SENTENCES), return_tensors="np", padding="max_length",
                        truncation=True, max_length=length)
    feeds = {k: encoded[k].astype(np.int64) for k in ("input_ids", "attention_mask")}
    masks = feeds["attention_mask"]

    def embedding_cosine(outs: list[np.ndarray], ref: list[np.ndarray]) -> float:
        def pooled(x: np.ndarray, m: np.ndarray) -> np.ndarray:
            return (x[0] * m[:, None]).sum(0) / m.sum()
        return float(np.mean([_cosine(pooled(o, m), pooled(r, m))
                              for o, r, m in zip(outs, ref, masks, strict=True)]))

    graph = parse_pipeline(FOLD).run(optc.load_onnx(path)).graph
    return Case("minilm", graph, feeds,
                [{k: v[i:i + 1] for k, v in feeds.items()} for i in range(len(SENTENCES))],
                "embedding cos", embedding_cosine)


def load_case(model: str, work: Path) -> Case:
    if model in ("digits", "fashion"):
        return labeled_case(model)
    return {"efficientnet_lite0": efficientnet_case, "minilm": minilm_case}[model](work)


def tvm_target(mcpu: str | None) -> dict[str, Any]:
    """This host's TVM target, or one for the LLVM CPU ``mcpu`` (``znver3``: a Zen 3,
    AVX2 without AVX-512, compiled and run on a newer x86 host)."""
    from optc.codegen.host_cpu import host_target, host_triple

    if mcpu is None:
        return host_target(THREADS)
    return {"kind": "llvm", "mtriple": host_triple(), "mcpu": mcpu, "num-cores": THREADS}


def tvm_runner(graph: optc.Graph, folder: Path, name: str,
               target: dict[str, Any]) -> tuple[Runner, Any, int]:
    """(run on feeds, the Relax VM, library bytes) of optc's build for ``target``."""
    import tvm

    from optc.codegen.build import build

    built = build(graph, target)
    size = built.export_library(folder / f"{name}.so").stat().st_size
    machine = tvm.relax.VirtualMachine(built.executable, tvm.cpu())
    order = [spec.name for spec in built.inputs]

    def run(feeds: dict[str, np.ndarray]) -> np.ndarray:
        out = machine["main"](*[tvm.runtime.tensor(feeds[n], tvm.cpu()) for n in order])
        return (out[0] if isinstance(out, tvm.ir.Array) else out).numpy()

    return run, machine, size


def ort_session(path: Path) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def ort_quantize(fp32: Path, out: Path, calibration: Sequence[dict[str, np.ndarray]]) -> Path:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(calibration)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.items, None)

    quantize_static(str(fp32), str(out), Reader(), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8)
    return out


def tvm_call(machine: Any, feeds: dict[str, np.ndarray], order: list[str],
             ) -> Callable[[], Any]:
    """One call of the VM's ``main`` on ``feeds`` already on the device."""
    import tvm

    args = [tvm.runtime.tensor(feeds[n], tvm.cpu()) for n in order]
    return lambda: machine["main"](*args)


def bench(case: Case, repeat: int, options: Options, work: Path,
          target: dict[str, Any]) -> dict[str, Any]:
    order = list(case.graph.input_names)
    probe = case.eval_feeds[0]
    row: dict[str, Any] = {"model": case.name}
    fp32_path = work / f"{case.name}.fp32.onnx"
    optc.save_onnx(case.graph, fp32_path)

    started = time.perf_counter()
    ctx = PassContext(calibration=case.calibration)
    mixed, report = quantize_mixed(case.graph, ctx, options)
    row["search_s"] = time.perf_counter() - started
    row["bits"] = _bits_summary(report.bits() if report else {})

    variants: dict[str, Runner] = {}
    calls: dict[str, Callable[[], Any]] = {}
    for name, graph in (("optc_fp32", case.graph), ("optc_mixed", mixed)):
        run, machine, size = tvm_runner(graph, work, f"{case.name}.{name}", target)
        calls[name] = tvm_call(machine, probe, order)
        row[f"{name}_bytes"] = size
        variants[name] = run
    ort_q = ort_quantize(fp32_path, work / f"{case.name}.ort_q.onnx",
                         [_batch_one(case.calibration, i) for i in range(case.calib_size)])
    for name, path in (("ort_fp32", fp32_path), ("ort_int8", ort_q)):
        session = ort_session(path)
        calls[name] = lambda s=session: s.run(None, probe)
        variants[name] = lambda f, s=session: s.run(None, f)[0]
    for name, median in interleaved_medians(calls, repeat).items():
        row[f"{name}_s"] = median
    reference = [variants["ort_fp32"](f) for f in case.eval_feeds]
    for name, run in variants.items():
        row[f"{name}_quality"] = case.quality([run(f) for f in case.eval_feeds], reference)
    return row


def _batch_one(calibration: dict[str, np.ndarray], index: int) -> dict[str, np.ndarray]:
    return {k: v[index:index + 1] for k, v in calibration.items() if k != "labels"}


def _bits_summary(bits: dict[str, str]) -> str:
    counts: dict[str, int] = {}
    for label in bits.values():
        counts[label] = counts.get(label, 0) + 1
    return " ".join(f"{k}:{v}" for k, v in sorted(counts.items())) or "fp32"


def print_rows(rows: list[dict[str, Any]], metric_names: dict[str, str],
               header: bool = True) -> None:
    if header:
        print(f"\n{'model':<19}{'variant':<12}{'ms':>9}{'vs optc fp32':>14}{'vs ORT fp32':>13}"
              f"{'lib KB':>9}  quality")
    for row in rows:
        for variant in ("optc_fp32", "optc_mixed", "ort_fp32", "ort_int8"):
            ms = row[f"{variant}_s"] * 1e3
            size = row.get(f"{variant}_bytes")
            kb = f"{size / 1024:9.0f}" if size else f"{'-':>9}"
            print(f"{row['model']:<19}{variant:<12}{ms:9.3f}"
                  f"{row[f'{variant}_s'] / row['optc_fp32_s']:14.2f}"
                  f"{row[f'{variant}_s'] / row['ort_fp32_s']:13.2f}"
                  f"{kb}  "
                  f"{metric_names[row['model']]} {row[f'{variant}_quality']:.4f}")
        print(f"{'':<19}optc mixed / ORT int8 latency: "
              f"{row['optc_mixed_s'] / row['ort_int8_s']:.2f}; optc bits: {row['bits']}; "
              f"search {row['search_s']:.0f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--max-drop", type=float, default=Options().max_drop)
    parser.add_argument("--fast", action="store_true", help="cheap sensitivity analysis")
    parser.add_argument("--mcpu", default=None,
                        help="LLVM CPU optc compiles for (default: this host), e.g. znver3 "
                             "for a Zen 3 (AVX2, no AVX-512 VNNI) on a newer x86 host; "
                             "int8 weight codes follow its int8 kernel (optc.quant.kernels)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    options = Options(max_drop=args.max_drop)
    if args.fast:
        options = Options(max_drop=args.max_drop, hutchinson_samples=1, sensitivity_samples=2,
                          dependencies=False)
    from optc.quant.kernels import int8_code_bits

    target = tvm_target(args.mcpu)
    options = dataclasses.replace(options, int8_code_bits=int8_code_bits(target))
    import torch

    torch.set_num_threads(THREADS)
    from optc.cost.calibration import cpu_flags, cpu_model

    flags = cpu_flags()
    int8 = [f for f in ("avx512_vnni", "avx_vnni", "avx512bw", "avx2") if f in flags]
    # int8 speed depends on the ISA: VNNI has a one-instruction u8 x i8 dot product
    print(f"CPU {cpu_model()}, {THREADS} threads; int8 instructions: "
          f"{', '.join(int8) or 'none of avx2/avx512'}; optc compiles for "
          f"{target.get('mcpu')}, {options.int8_code_bits}-bit int8 weight codes")
    rows, metrics = [], {}
    with tempfile.TemporaryDirectory(prefix="optc-qbench-") as tmp:
        for model in args.models:
            case = load_case(model, Path(tmp))
            metrics[case.name] = case.metric
            rows.append(bench(case, args.repeat, options, Path(tmp), target))
            print_rows(rows[-1:], metrics, header=len(rows) == 1)
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
