"""Fit the host roofline's efficiencies and achieved memory bandwidth on generated models,
then cache them.

The roofline at the micro-benchmark's peaks is a lower bound: TVM's untuned kernels reach
a fraction of peak that depends on the kind of op, and batch-1 fully connected layers
stream their weights well below the STREAM figure. This fits both (``optc.cost.fit.
fit_host``) on *generated* models measured with optc's TVM build on this host: the
``tvm-2t`` rows of ``optc/latency/data/meta_train_v1.jsonl.gz`` (0.04-13 ms models) and
of ``optc/latency/data/host_fit_v1.jsonl.gz`` (the ``wide`` family: AlexNet / VGG-like
convolutions and fully connected layers of 20-800 ms, the range of the large real CNNs).
The real models of ``benchmarks/compile_vs_ort.py`` are never part of the fit.

``--collect N`` first measures N ``wide`` models (``optc.latency.arch.sample_large_specs``)
on ``tvm-2t`` into the extra file, replacing it (``--resume`` keeps its rows and adds the
missing ones); ``--collect-small M`` adds M models of the ordinary families
(``sample_specs``, another seed than the shipped dataset's). ``--here`` fits on the extra
file alone: the shipped dataset was measured on another machine (a Zen 4 with AVX-512)
with older schedules, and a fit for *this* host must use rows measured on it.
The fit uses each model's median run, the figure the benchmarks report
(``--fastest``: the fastest run instead, for data collected on a busy machine).

``optc targets --calibrate host --fit`` does the same for a user's machine (rows in the
calibration cache, ``optc.cost.host_fit``); this script also refits on the shipped files.

    python benchmarks/fit_host_efficiency.py --collect 12     # measure, then fit (~8 min)
    python benchmarks/fit_host_efficiency.py --collect 12 --collect-small 60 --here
    python benchmarks/fit_host_efficiency.py                  # fit on the files as they are
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from optc.cost.host_fit import DEVICE, collect_rows, fit_rows, generated_rows

DATA = Path(__file__).resolve().parents[1] / "optc" / "latency" / "data"
TRAIN = DATA / "meta_train_v1.jsonl.gz"
EXTRA = DATA / "host_fit_v1.jsonl.gz"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=DEVICE)
    parser.add_argument("--collect", type=int, default=0, metavar="N",
                        help="first measure N large generated models into --extra")
    parser.add_argument("--collect-small", type=int, default=0, metavar="M",
                        help="also measure M ordinary generated models into --extra")
    parser.add_argument("--here", action="store_true",
                        help="fit on --extra alone (rows measured on this machine)")
    parser.add_argument("--extra", type=Path, default=EXTRA,
                        help=f"the large models' dataset (default {EXTRA.name})")
    parser.add_argument("--seed", type=int, default=1, help="seed of the large models")
    parser.add_argument("--resume", action="store_true",
                        help="with --collect: keep the rows already in --extra")
    parser.add_argument("--fastest", action="store_true",
                        help="fit the fastest run (min_s) instead of the median")
    parser.add_argument("--limit", type=int, default=0,
                        help="first N rows of meta_train only (0: all)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if min(args.collect, args.collect_small, args.limit) < 0:
        print("error: --collect, --collect-small and --limit take a count >= 0",
              file=sys.stderr)
        return 2
    started = time.perf_counter()
    if args.collect or args.collect_small:
        collect_rows(args.extra, args.collect, args.collect_small, args.seed, args.device,
                     args.resume,
                     progress=lambda text: print(text, file=sys.stderr, flush=True))
    train = [] if args.here else generated_rows(TRAIN, args.device)
    train = train[:args.limit] if args.limit else train
    rows = train + generated_rows(args.extra, args.device)
    if not rows:
        print(f"error: no generated {args.device} rows to fit", file=sys.stderr)
        return 2
    extra = len(rows) - len(train)
    report = fit_rows(
        rows, f"fitted on {len(rows)} generated models ({args.device} rows of "
              f"{'' if args.here else TRAIN.name + ' and '}{extra} of {args.extra.name}, "
              f"{'fastest' if args.fastest else 'median'} runs)", fastest=args.fastest)
    print(f"fitted on {report.models} generated models ({args.device}, {extra} from "
          f"{args.extra.name}) in {time.perf_counter() - started:.0f} s; MAPE on them: "
          f"{report.mape_at_peak:.1f}% at peak -> {report.mape_fitted:.1f}% fitted")
    saved = report.calibration
    stream = saved.figures.get("memory_bandwidth", 0.0)
    for name, value in sorted(saved.fitted_figures.items()):
        share = f" ({value / stream:.2f} of STREAM)" if name == "memory_bandwidth" else ""
        print(f"  {name:<16} {value:.4g}{share}")
    for name, value in sorted(saved.efficiency.items()):
        print(f"  {name:<16} {value:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
