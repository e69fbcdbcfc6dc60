"""optc mixed-precision + TVM vs onnxruntime's static int8 quantization, side by side.

For each model (the digits and Fashion-MNIST CNNs, EfficientNet-Lite0 on real photos,
MiniLM-L6), batch 1, all in one process with the same thread count:

- fp32: optc's TVM build and onnxruntime on the same (BatchNorm-folded) ONNX model;
- optc ``mixed-precision`` (``quantize_mixed``) at its default ``max-drop`` (0.01) on the
  calibration set (the drop in accuracy, MiniLM embedding cosine, EfficientNet logit
  cosine), compiled with optc's TVM code generator (QDQ layers as
  uint8 x int8 -> int32 contractions, weight-only layers reading int8 codes in the kernel);
- onnxruntime ``quantize_static`` (QDQ format, per-channel int8 weights, uint8
  activations, MinMax calibration on the same calibration set), run by onnxruntime.

Against 16-bit, the paper's own comparison (Schaefer et al. report -25 % latency on
ResNet-50 and -33 % on BERT against 16-bit at 99.99 % accuracy), unless ``--no-16bit``:

- optc 16-bit: every layer at the pass's 16-bit rung (``Options(bits=(16,))``, no drop
  limit): bfloat16 where the target has AVX-512 BF16 (``vdpbf16ps``), float16 elsewhere
  (widened to float32 on x86, so no faster there: the pass then leaves the model fp32);
- optc mixed at ``--paper-drop`` (default 0.0001, the paper's 99.99 %): the same search as
  the max-drop point, with that drop; its latency against 16-bit, paired.

Latencies are medians over ``--repeat`` calls after warm-up, the four variants of a model
timed in interleaved rounds (so that a change of load hits them alike); quality is accuracy
on the held-out digits / Fashion-MNIST images (with labels), else top-1 agreement and logit
cosine with the fp32 model (EfficientNet on crops/flips of scikit-learn's two sample
photos), else cosine of the mean-pooled sentence embedding (MiniLM). Library sizes are the
exported ``.so`` files.

    python benchmarks/quantize_vs_ort.py --models digits fashion --repeat 20
    python benchmarks/quantize_vs_ort.py --models efficientnet_lite0 minilm --fast
    python benchmarks/quantize_vs_ort.py --fast --mcpu znver3   # optc code for a Zen 3
    python benchmarks/quantize_vs_ort.py --fast --no-budgets      # the max-drop point only

``--mcpu`` compiles optc's variants for another LLVM CPU of this architecture (its code
must run here: ``znver3`` on a newer AMD or Intel CPU with AVX2), with the int8 weight
codes its kernel needs (7-bit without AVX-512 VNNI, ``optc.quant.kernels``);
onnxruntime still runs this host's own kernels.

Budget points (``--budgets``, on by default): optc's own budget search, the path of
``optc compile MODEL --target host --budget B --max-drop D --calib F``
(``optc.search.prepare`` once per model, then ``optc.search.choose`` per budget, with
the benchmark's TVM target and timing standing in for ``optc.compiler``'s
``TargetMeasurer``), at three budgets: (a) onnxruntime int8's latency (measured first,
interleaved with optc fp32), the peer at the same budget; (b) half of optc's fp32
latency, the issue's goal; (c) their geometric mean. For each: the candidate the
search writes, its latency timed interleaved with all the other variants, its
held-out quality, and whether it met the budget there.

How budget and max-drop interact: the search's candidates are the ``mixed-precision``
pass as configured (the fastest assignment within ``--budget-max-drop``, default
0.02), its proposals (fp16 only; fp16+int8 and fp16+int8+int4 with 8- or 16-bit
activations, each the fastest within that drop), the same at 1/2, 1/4 and 1/8 of the
drop, and the fp32 model (candidates giving the same graph are one). Among those
within the drop, the search writes the most accurate whose measured latency fits the
budget; when none fits, the fastest within the drop (the "best point", reported as a
miss). So a larger max-drop lets a tight budget buy speed with accuracy, and a loose
budget buys accuracy back (down to fp32). The pass ranks its assignments with the
host roofline there (as ``optc compile --budget`` does: ``ctx.analyses["latency"]``),
the max-drop point above with its own host proxy (``optc.quant.latency``). Scores are
on the calibration data, with the pass's metric: accuracy with labels (digits,
Fashion-MNIST), embedding cosine (MiniLM) and, for EfficientNet, logit cosine (its
eight photo views make top-1 agreement too coarse to rank candidates: all agree).
Budgets under ~0.1 ms (the two CNNs) are within the timing noise of a shared VM: a
"MISSED" there can be a few microseconds.

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
from timing import SETTLE_S, interleaved_medians, paired_ratio

import optc
from optc import zoo
from optc.pipeline import PassContext, parse_pipeline
from optc.quant import Options, quantize_mixed

THREADS = 2
PAPER_DROP = 1e-4
BUDGET_MAX_DROP = 0.02
BUDGET_LABELS = ("ORT int8", "between", "0.5x fp32")
SAME = {"optc_mixed": "; = max-drop point", "optc_fp32": "; = optc fp32"}
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
    search_metric: str = "auto"
    """The mixed-precision pass's and the budget search's metric on the calibration data."""

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
                [{"image": v[None]} for v in views], "logit cos", agreement, "cosine")


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
    main = machine["main"]  # looked up once, as a serving loop would: ~1 us per lookup
    return lambda: main(*args)


def bench(case: Case, repeat: int, options: Options, work: Path,
          target: dict[str, Any], budgets: bool, budget_options: str,
          budget_max_drop: float, paper_drop: float | None = PAPER_DROP) -> dict[str, Any]:
    order = list(case.graph.input_names)
    probe = case.eval_feeds[0]
    row: dict[str, Any] = {"model": case.name, "budgets": []}
    fp32_path = work / f"{case.name}.fp32.onnx"
    optc.save_onnx(case.graph, fp32_path)

    started = time.perf_counter()
    ctx = PassContext(calibration=case.calibration)
    mixed, report = quantize_mixed(case.graph, ctx, options)
    row["search_s"] = time.perf_counter() - started
    row["bits"] = _bits_summary(report.bits() if report else {})

    graphs = [("optc_fp32", case.graph), ("optc_mixed", mixed)]
    if paper_drop is not None:  # every layer 16-bit, and the search at the paper's drop
        for name, extra in (("optc_16bit", {"bits": (16,), "max_drop": 1.0}),
                            ("optc_mixed_paper", {"max_drop": paper_drop})):
            graph, variant_report = quantize_mixed(
                case.graph, ctx, dataclasses.replace(options, **extra))
            row[f"{name}_bits"] = _bits_summary(variant_report.bits() if variant_report else {})
            graphs.append((name, graph))
    variants: dict[str, Runner] = {}
    calls: dict[str, Callable[[], Any]] = {}
    for name, graph in graphs:
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
    if budgets:
        started = time.perf_counter()
        points = budget_points(case, ctx, target, work, calls, repeat, budget_options,
                               budget_max_drop)
        row["budget_search_s"] = time.perf_counter() - started
        from optc.search.candidates import graph_key

        known = {graph_key(mixed): "optc_mixed", graph_key(case.graph): "optc_fp32"}
        for point in points:
            # one timing per distinct graph (the max-drop point's and fp32 included): the
            # same graph under two names would only show the timing noise
            name = known.get(point["key"], f"budget_{point['key'][:8]}")
            calls.setdefault(name, point["call"])
            variants.setdefault(name, point["run"])
            row["budgets"].append({**{k: v for k, v in point.items()
                                      if k not in ("call", "run")}, "variant": name})
    for name, median in interleaved_medians(calls, repeat).items():
        row[f"{name}_s"] = median
    # mixed / fp32: two optc builds, so paired calls (``timing.paired_ratio``); the ratio
    # of the medians above, with onnxruntime's blocks between them, moved by up to ~15 %
    row["mixed_vs_fp32"] = paired_ratio(calls["optc_mixed"], calls["optc_fp32"])
    if paper_drop is not None:
        row["16bit_vs_fp32"] = paired_ratio(calls["optc_16bit"], calls["optc_fp32"])
        row["mixed_vs_16bit"] = paired_ratio(calls["optc_mixed"], calls["optc_16bit"])
        row["paper_vs_16bit"] = paired_ratio(calls["optc_mixed_paper"], calls["optc_16bit"])
    reference = [variants["ort_fp32"](f) for f in case.eval_feeds]
    for name, run in variants.items():
        row[f"{name}_quality"] = case.quality([run(f) for f in case.eval_feeds], reference)
    for point in row["budgets"]:
        point["latency_s"] = row[f"{point['variant']}_s"]
        point["quality"] = row[f"{point['variant']}_quality"]
    return row


class BenchMeasurer:
    """``optc.search.Measurer`` for the benchmark: builds a candidate for the benchmark's
    TVM target (``--mcpu`` included) and times batch-1 calls on the probe feed, as
    ``optc.compiler.budget.TargetMeasurer`` does for ``optc compile --budget``. Builds
    are kept by graph, so a candidate is compiled once over all budgets."""

    unavailable: str | None = None

    def __init__(self, case: Case, target: dict[str, Any], work: Path) -> None:
        self.case = case
        self.target = target
        self.work = work
        self.builds: dict[str, tuple[Runner, Callable[[], Any]]] = {}
        self.build_s = 0.0

    def compiled(self, candidate: Any) -> tuple[Runner, Callable[[], Any]]:
        """``(run on feeds, one timed call on the probe feed)`` of ``candidate``."""
        from optc.search.candidates import graph_key

        key = graph_key(candidate.graph)
        if key not in self.builds:
            from optc.compiler.budget import CandidateBuildError

            started = time.perf_counter()
            try:
                run, machine, _ = tvm_runner(candidate.graph, self.work,
                                             f"{self.case.name}.candidate{len(self.builds)}",
                                             self.target)
            except Exception as exc:  # TVM's own errors: this candidate is out, not the search
                raise CandidateBuildError(f"TVM could not compile {candidate.text}: "
                                      f"{type(exc).__name__}: {exc}") from exc
            finally:
                self.build_s += time.perf_counter() - started
            order = list(candidate.graph.input_names)
            self.builds[key] = run, tvm_call(machine, self.case.eval_feeds[0], order)
        return self.builds[key]

    def __call__(self, candidate: Any, repeat: int) -> float:
        _, call = self.compiled(candidate)
        time.sleep(SETTLE_S)  # the last runtime's spinning threads gone (timing.py)
        for _ in range(3):
            call()
        samples = []
        for _ in range(repeat):
            start = time.perf_counter()
            call()
            samples.append(time.perf_counter() - start)
        return float(np.median(samples))

    def outputs(self, candidate: Any, inputs: Any) -> np.ndarray:
        run, _ = self.compiled(candidate)
        arrays = {k: np.asarray(v) for k, v in inputs.items()}
        count = len(next(iter(arrays.values())))
        return np.concatenate([run({k: v[i:i + 1] for k, v in arrays.items()})
                               for i in range(count)])


def budget_points(case: Case, ctx: PassContext, target: dict[str, Any], work: Path,
                  calls: dict[str, Callable[[], Any]], repeat: int, pass_options: str,
                  max_drop: float) -> list[dict[str, Any]]:
    """optc's budget search at the budgets of ``BUDGET_LABELS`` (module docstring): per
    budget, the written candidate with ``run``/``call`` to time and score it. ``ctx``:
    the max-drop point's context (calibration and analysis cache)."""
    from optc.search import Predictor, Scorer, Settings, choose, prepare
    from optc.search.candidates import graph_key
    from optc.search.request import search_pipeline

    first = interleaved_medians({k: calls[k] for k in ("optc_fp32", "ort_int8")}, repeat)
    peer, half = first["ort_int8"], first["optc_fp32"] / 2
    budgets = dict(zip(BUDGET_LABELS, (peer, (peer * half) ** 0.5, half), strict=True))
    optc_target = search_target(target)
    options = " ".join(filter(None, (pass_options, f"metric={case.search_metric}")))
    pipeline = search_pipeline(f"mixed-precision{{{options}}}", max_drop)
    settings = Settings(budget_s=peer, max_drop=max_drop, repeat=10, quick_repeat=3,
                        max_measured=6)
    predictor = Predictor(settings.latency_model, optc_target)
    # as compile_with_budget; the cache (the pass's sensitivity session, which does not
    # depend on the latency analysis) is the max-drop point's, so it is not computed twice
    ctx = ctx.replace(target=optc_target, analyses={**ctx.analyses,
                                                    "latency": predictor.seconds},
                      cache=ctx.cache)
    scorer = Scorer(case.graph, case.calibration, metric=case.search_metric)
    started = time.perf_counter()
    prepared = prepare(case.graph, pipeline, ctx, predictor, scorer, settings)
    prepare_s = time.perf_counter() - started
    measurer = BenchMeasurer(case, target, work)
    points = []
    for label, budget in budgets.items():
        result = choose(prepared, dataclasses.replace(settings, budget_s=budget), measurer)
        index = result.best if result.best is not None else 0
        point, candidate = result.points[index], result.candidates[index]
        run, call = measurer.compiled(candidate)
        points.append({"label": label, "budget_s": budget, "met_search": result.chosen
                       is not None, "search_s": point.latency_s, "score": point.score,
                       "drop": point.drop, "bits": _bits_summary(_candidate_bits(candidate)),
                       "pipeline": candidate.text, "key": graph_key(candidate.graph),
                       "run": run, "call": call})
    points[0]["prepare_s"] = prepare_s
    points[0]["candidates"] = len(prepared.candidates)
    points[0]["builds"] = len(measurer.builds)
    points[0]["build_s"] = measurer.build_s
    return points


def search_target(target: dict[str, Any]) -> Any:
    """optc's ``host`` target compiling for ``target`` (its ``mcpu`` decides the int8 weight
    codes the pass emits, ``optc.quant.kernels``)."""
    import json

    from optc.target import get_target

    host = get_target("host")
    return dataclasses.replace(host, tvm_target_json=json.dumps(target))


def _candidate_bits(candidate: Any) -> dict[str, str]:
    """Layer -> precision label of a candidate (empty: no mixed-precision report, fp32)."""
    import json

    from optc.quant.report import REPORT_KEY

    text = candidate.graph.metadata.get(REPORT_KEY)
    layers = json.loads(text).get("layers", []) if text else []
    return {layer["key"]: layer["precision"] for layer in layers}


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
        print(f"\n{'model':<19}{'variant':<17}{'ms':>9}{'vs optc fp32':>14}{'vs ORT fp32':>13}"
              f"{'lib KB':>9}  quality")
    for row in rows:
        names = ("optc_fp32", "optc_mixed", "optc_16bit", "optc_mixed_paper", "ort_fp32",
                 "ort_int8")
        for variant in (v for v in names if f"{v}_s" in row):
            ms = row[f"{variant}_s"] * 1e3
            size = row.get(f"{variant}_bytes")
            kb = f"{size / 1024:9.0f}" if size else f"{'-':>9}"
            print(f"{row['model']:<19}{variant:<17}{ms:9.3f}"
                  f"{row[f'{variant}_s'] / row['optc_fp32_s']:14.2f}"
                  f"{row[f'{variant}_s'] / row['ort_fp32_s']:13.2f}"
                  f"{kb}  "
                  f"{metric_names[row['model']]} {row[f'{variant}_quality']:.4f}")
        print(f"{'':<19}optc mixed / optc fp32, paired calls: {row['mixed_vs_fp32']:.3f}")
        if "mixed_vs_16bit" in row:
            print(f"{'':<19}against 16-bit, paired calls: 16-bit / fp32 "
                  f"{row['16bit_vs_fp32']:.3f} ({row['optc_16bit_bits']}); mixed / 16-bit "
                  f"{row['mixed_vs_16bit']:.3f}; mixed at the paper's drop / 16-bit "
                  f"{row['paper_vs_16bit']:.3f} ({row['optc_mixed_paper_bits']})")
        print(f"{'':<19}optc mixed / ORT int8 latency: "
              f"{row['optc_mixed_s'] / row['ort_int8_s']:.2f}; optc bits: {row['bits']}; "
              f"search {row['search_s']:.0f} s")
        print_budgets(row, metric_names[row["model"]])


def print_budgets(row: dict[str, Any], metric: str) -> None:
    """The budget points of ``row`` and the verdict against onnxruntime's int8."""
    if not row["budgets"]:
        return
    first = row["budgets"][0]
    print(f"{'':<19}budget search: {first['candidates']} candidates, prepared in "
          f"{first['prepare_s']:.0f} s, {first['builds']} builds in {first['build_s']:.0f} s, "
          f"{row['budget_search_s']:.0f} s in all")
    for point in row["budgets"]:
        met = point["latency_s"] <= point["budget_s"]
        print(f"{'':<19}{'@' + point['label']:<12}{point['latency_s'] * 1e3:9.3f}"
              f"{point['latency_s'] / row['optc_fp32_s']:14.2f}"
              f"{point['latency_s'] / row['ort_fp32_s']:13.2f}{'-':>9}  "
              f"{metric} {point['quality']:.4f}  budget {point['budget_s'] * 1e3:.3f} ms "
              f"{'met' if met else 'MISSED'} (search: {'met' if point['met_search'] else 'missed'}"
              f", calib drop {point['drop']:.4f}; {point['bits']}"
              f"{SAME.get(point['variant'], '')})")
    peer_s, peer_q = row["ort_int8_s"], row["ort_int8_quality"]
    rivals = [("max-drop point", row["optc_mixed_s"], row["optc_mixed_quality"])] + [
        (f"@{p['label']}", p["latency_s"], p["quality"]) for p in row["budgets"]]
    fitting = [r for r in rivals if r[1] <= peer_s]
    best = max(fitting, key=lambda r: (r[2], -r[1]), default=None)
    verdict = "yes" if best is not None and best[2] > peer_q else "no"
    detail = "no optc point at or under its latency" if best is None else \
        f"{best[0]}: {metric} {best[2]:.4f} vs {peer_q:.4f} at {best[1] / peer_s:.2f}x " \
        f"its latency"
    print(f"{'':<19}better accuracy than ORT int8 at equal or lower latency: {verdict} "
          f"({detail})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--max-drop", type=float, default=Options().max_drop)
    parser.add_argument("--fast", action="store_true", help="cheap sensitivity analysis")
    parser.add_argument("--paper-drop", type=float, default=PAPER_DROP,
                        help="max-drop of the mixed point compared with 16-bit "
                             "(default %(default)s: the paper's 99.99 %%)")
    parser.add_argument("--no-16bit", dest="sixteen", action="store_false",
                        help="skip the all-16-bit and paper-drop variants")
    parser.add_argument("--no-budgets", dest="budgets", action="store_false",
                        help="skip the budget search points")
    parser.add_argument("--budget-max-drop", type=float, default=BUDGET_MAX_DROP,
                        help="the budget search's max-drop (default %(default)s)")
    parser.add_argument("--mcpu", default=None,
                        help="LLVM CPU optc compiles for (default: this host), e.g. znver3 "
                             "for a Zen 3 (AVX2, no AVX-512 VNNI) on a newer x86 host; "
                             "int8 weight codes follow its int8 kernel (optc.quant.kernels)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    options = Options(max_drop=args.max_drop)
    budget_options = ""  # the mixed-precision pass's options in the budget search
    if args.fast:
        options = Options(max_drop=args.max_drop, hutchinson_samples=1, sensitivity_samples=2,
                          dependencies=False)
        budget_options = "hutchinson-samples=1 sensitivity-samples=2 dependencies=false"
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
            case_options = dataclasses.replace(options, metric=case.search_metric) \
                if case.search_metric != "auto" else options
            rows.append(bench(case, args.repeat, case_options, Path(tmp), target,
                              args.budgets, budget_options, args.budget_max_drop,
                              args.paper_drop if args.sixteen else None))
            print_rows(rows[-1:], metrics, header=len(rows) == 1)
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
