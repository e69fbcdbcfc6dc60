"""optc-compiled latency vs onnxruntime vs torch eager, side by side, on this host.

For each model (onnx's ``light`` CNNs, MiniLM-L6, EfficientNet-Lite0; fp32, batch 1):
``optc.compile_model(..., target="host")`` builds and checks the model; then, in the
same process and with the same thread count, optc's artifact, onnxruntime and (where a
torch module exists) torch eager are timed on the same inputs in interleaved rounds
(``timing.py``: a change of load on a shared machine hits them alike). Every figure is a
median over ``--repeat`` runs after warm-up. Printed: the medians, the ratios optc/ORT and
torch/ORT, their geometric means, and the roofline's predicted latency vs optc's
measured one (MAPE).

    python benchmarks/compile_vs_ort.py                       # all models
    python benchmarks/compile_vs_ort.py --models squeezenet resnet50 --repeat 20
    python benchmarks/compile_vs_ort.py --tune 64             # untuned and tuned, side by side

With ``--tune N``, each model is compiled twice in the same run, untuned and with N
MetaSchedule trials (database cached under optc's cache: a second run reuses it), and
the table adds the untuned latency, tuned/untuned (the median ratio of the two builds
called back to back, ``timing.paired_ratio``) and the tuning wall time.

torch eager is n/a for the ``light`` models: they exist only as ONNX.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from timing import interleaved_medians, paired_ratio

from optc import zoo
from optc.codegen import load_artifact
from optc.codegen.run import device_tensors
from optc.compiler import compile_model

THREADS = 2
LIGHT = list(zoo.LIGHT_MODELS)
ALL_MODELS = [*LIGHT, "minilm", "efficientnet_lite0"]


@dataclass
class Row:
    model: str
    optc_s: float
    ort_s: float
    torch_s: float | None
    predicted_s: float | None
    compile_s: float
    untuned_s: float | None = None  # with --tune: optc without tuning, same run
    tune_s: float | None = None  # with --tune: the tuning stage's wall time
    tuned_ratio: float | None = None  # with --tune: tuned/untuned, paired calls

    @property
    def ratio(self) -> float:
        return self.optc_s / self.ort_s


def prepare(model: str, folder: Path) -> tuple[Path, dict[str, np.ndarray], Any]:
    """(ONNX path, feeds, torch module or None) for one model."""
    if model in LIGHT:
        path = zoo.light_model_path(model)
        return path, zoo.backend_runner_inputs(path), None
    if model == "minilm":
        path = zoo.export_minilm(folder / "minilm.onnx", dynamo=False)
        return path, zoo.minilm_inputs(), zoo.minilm_module()
    if model == "efficientnet_lite0":
        path = zoo.export_efficientnet(folder / "effnet.onnx", dynamo=False)
        return path, {"image": zoo.sample_photo()}, zoo.efficientnet_module()
    raise SystemExit(f"unknown model {model!r}; choose from {', '.join(ALL_MODELS)}")


def ort_session(path: Path) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def torch_runner(module: Any, feeds: dict[str, np.ndarray]) -> Callable[[], Any]:
    import torch

    args = [torch.from_numpy(v) for v in feeds.values()]

    def run() -> Any:
        with torch.inference_mode():
            return module(*args)

    return run


def bench_model(model: str, repeat: int, tune: int, work: Path) -> Row:
    import torch

    torch.set_num_threads(THREADS)
    path, feeds, module = prepare(model, work)
    started = time.perf_counter()
    result = compile_model(path, "host", work / f"{model}.optc", repeat=repeat, tune=tune)
    compile_s = time.perf_counter() - started
    tune_s = None
    plain = None
    if tune:
        tune_s = float(result.report["stages_s"]["tune"])
        plain = compile_model(path, "host", work / f"{model}-untuned.optc", repeat=repeat)
    predicted = result.report.get("predicted") or {}
    artifact = load_artifact(result.artifact)
    args = device_tensors(artifact.manifest.inputs, feeds, artifact.device)
    session = ort_session(path)
    runs = {"optc": lambda: artifact.vm["main"](*args), "ort": lambda: session.run(None, feeds)}
    if module is not None:
        runs["torch"] = torch_runner(module, feeds)
    if plain is not None:
        untuned = load_artifact(plain.artifact)
        untuned_args = device_tensors(untuned.manifest.inputs, feeds, untuned.device)
        runs["untuned"] = lambda: untuned.vm["main"](*untuned_args)
    medians = interleaved_medians(runs, repeat)
    # tuned/untuned: both are optc builds, so paired calls (``paired_ratio``); the
    # medians above put onnxruntime's block between them and need not agree to 15 %
    tuned_ratio = paired_ratio(runs["optc"], runs["untuned"]) if plain is not None else None
    return Row(
        model,
        medians["optc"],
        medians["ort"],
        medians.get("torch"),
        predicted.get("latency_s"),
        compile_s,
        medians.get("untuned"),
        tune_s,
        tuned_ratio,
    )


def geomean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


def print_table(rows: list[Row]) -> None:
    print(
        f"{'model':<20}{'optc ms':>10}{'ORT ms':>10}{'torch ms':>10}"
        f"{'optc/ORT':>10}{'torch/ORT':>10}{'roofline ms':>13}{'compile s':>11}"
    )
    for r in rows:
        torch_ms = f"{r.torch_s * 1e3:10.2f}" if r.torch_s else f"{'n/a':>10}"
        torch_ratio = f"{r.torch_s / r.ort_s:10.2f}" if r.torch_s else f"{'n/a':>10}"
        pred = f"{r.predicted_s * 1e3:13.2f}" if r.predicted_s else f"{'n/a':>13}"
        print(
            f"{r.model:<20}{r.optc_s * 1e3:10.2f}{r.ort_s * 1e3:10.2f}{torch_ms}"
            f"{r.ratio:10.2f}{torch_ratio}{pred}{r.compile_s:11.1f}"
        )
    print(f"\ngeometric mean optc/ORT: {geomean([r.ratio for r in rows]):.2f}")
    tuned = [r for r in rows if r.untuned_s]
    if tuned:
        print(
            f"\n{'model':<20}{'untuned ms':>12}{'tuned ms':>10}{'tuned/untuned':>15}"
            f"{'untuned/ORT':>13}{'tuned/ORT':>11}{'tune s':>8}"
        )
        for r in tuned:
            untuned = r.untuned_s or math.nan
            paired = r.tuned_ratio if r.tuned_ratio is not None else r.optc_s / untuned
            print(
                f"{r.model:<20}{untuned * 1e3:12.2f}{r.optc_s * 1e3:10.2f}"
                f"{paired:15.3f}{untuned / r.ort_s:13.2f}{r.ratio:11.2f}"
                f"{r.tune_s or 0:8.0f}"
            )
        print(
            f"geometric mean untuned/ORT "
            f"{geomean([(r.untuned_s or math.nan) / r.ort_s for r in tuned]):.2f}, "
            f"tuned/ORT {geomean([r.ratio for r in tuned]):.2f}"
        )
    predicted = [r for r in rows if r.predicted_s]
    if predicted:
        errors = [abs(r.predicted_s - r.optc_s) / r.optc_s for r in predicted]  # type: ignore[operator]
        print(
            f"roofline MAPE vs optc measured: {100 * statistics.fmean(errors):.1f}% "
            f"over {len(predicted)} models"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=ALL_MODELS, choices=ALL_MODELS)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--tune", type=int, default=0, help="MetaSchedule trials (0: none)")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="optc-bench-") as tmp:
        for model in args.models:
            row = bench_model(model, args.repeat, args.tune, Path(tmp))
            print(
                f"  {model}: optc {row.optc_s * 1e3:.2f} ms, ORT {row.ort_s * 1e3:.2f} ms",
                file=sys.stderr,
                flush=True,
            )
            rows.append(row)
    print_table(rows)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
