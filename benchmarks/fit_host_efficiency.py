"""Fit the host roofline's per-op-class efficiencies on the latency dataset, then cache them.

The roofline at the micro-benchmark's peaks is a lower bound: TVM's untuned kernels reach
a fraction of peak that depends on the kind of op. This fits those fractions
(``optc.cost.fit``) on *generated* models measured with optc's TVM build on this host
(the ``tvm-2t`` rows of ``optc/latency/data/meta_train_v1.jsonl.gz``), so that the real
models of ``benchmarks/compile_vs_ort.py`` are never part of the fit. The fastest
measured run (``min_s``) is used where recorded: the dataset was collected on a shared
machine and the fastest run is the least disturbed one.

    python benchmarks/fit_host_efficiency.py [--device tvm-2t] [--limit N]
"""

from __future__ import annotations

import argparse
import importlib.resources
import logging

from optc.cost.calibration import save_efficiency
from optc.cost.fit import Sample, fit_efficiency, mape, roofline_features
from optc.latency.dataset import graph_for, load_dataset
from optc.target import get_target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="tvm-2t")
    parser.add_argument("--limit", type=int, default=0, help="first N rows only (0: all)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    data = importlib.resources.files("optc.latency") / "data" / "meta_train_v1.jsonl.gz"
    rows = [r for r in load_dataset(str(data)) if r.device == args.device
            and r.model.startswith("gen:")]
    rows = rows[:args.limit] if args.limit else rows
    target = get_target("host")
    samples = [Sample(graph_for(r), r.min_s or r.latency_s) for r in rows]
    before = [sum(b.values()) + f for b, f in
              (roofline_features(s.graph, target) for s in samples)]
    efficiency = fit_efficiency(samples, target)
    saved = save_efficiency(efficiency, f"fitted on {len(samples)} generated models "
                                        f"({args.device} rows of meta_train_v1)")
    from optc.cost import RooflineModel

    fitted = get_target("host")
    after = [RooflineModel().estimate(s.graph, fitted).latency_s for s in samples]
    measured = [s.measured_s for s in samples]
    print(f"fitted on {len(samples)} generated models ({args.device}); "
          f"MAPE on them: {mape(before, measured):.1f}% at peak -> "
          f"{mape(after, measured):.1f}% fitted")
    for name, value in sorted(saved.efficiency.items()):
        print(f"  {name:<16} {value:.3f}")


if __name__ == "__main__":
    main()
