"""How well can a device's latency be predicted at all? Ceilings beside the floor.

The learned model adapts from 10 whole-graph latencies of a new device
(``latency_predictor.py``). This study asks what more data would buy, side by side on
the same rows, so that the learned model's error can be split into what 10 samples
cost and what the information itself cannot give:

- **floor**: the shipped retest collection scored as a prediction (re-measuring).
- **graph oracles**: every row of the device but one fold (10-fold cross-validation,
  about 190 graphs) instead of 10: a ridge and extra-trees on the learned model's graph
  features (``GraphEncoder``), predicting ``ln(latency) - ln(prior)``.
- **kernel oracle** (``--kernel-device``: an onnxruntime or TVM device): the same
  folds, but with the *per-kernel* latencies of the training graphs
  (``optc.latency.kernel_profile``: onnxruntime's profiler, or TVM's VM hook on optc's
  build): gradient-boosted trees predict each kernel of a held-out graph from its
  name's words and its shapes; the graph's latency is a least-squares map of the
  kernel sum and kernel count (fitted on the training graphs, relative error).
  ``kernels measured`` maps the held-out graph's own measured kernels, which says
  what that map alone costs. These columns, and ``graph trees, profiled runs`` beside
  them, predict the profiled runs' medians: labels of the same session as the kernels'
  (the dataset's latencies were measured in another session, which differs by the
  floor and, under the profiler, more). The held-out graph's kernels are taken from its profile:
  the oracle knows how the runtime splits a graph into kernels, which a predictor of
  an unseen graph would have to work out.
- **host-real**: the same predictors fitted on every meta-training row of the device
  predict the real models of ``host_real_v2`` (none of them in training).

    python benchmarks/latency_ceiling.py                 # all devices, kernels of ort-1t
    python benchmarks/latency_ceiling.py --kernel-device ort-2t --devices ort-2t
    TVM_BIND_THREADS=1 python benchmarks/latency_ceiling.py --kernel-device tvm-1t \
        --devices tvm-1t

Profiling runs each graph 50 times: about 2 minutes for onnxruntime's 218 graphs, more
for TVM, which builds each first. Needs scikit-learn (the ``models`` extra).
"""

from __future__ import annotations

import argparse
import math
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from optc.cost.learned_data import Labeled, reference_keys
from optc.cost.learned_eval import (
    DeviceRows,
    dataset_devices,
    device_rows,
    retest_scores,
    score,
)
from optc.cost.learned_features import PRIOR_INDEX, GraphEncoder
from optc.latency.kernel_profile import (
    KernelProfile,
    KernelTime,
    kernel_flops,
    profile_onnxruntime,
    profile_tvm,
)

DATA = Path(__file__).resolve().parents[1] / "optc" / "latency" / "data"
Profiler = Callable[..., KernelProfile]
PROFILERS: dict[str, tuple[Profiler, int]] = {
    "ort-1t": (profile_onnxruntime, 1),
    "ort-2t": (profile_onnxruntime, 2),
    "tvm-1t": (profile_tvm, 1),
    "tvm-2t": (profile_tvm, 2),
}
"""The devices whose kernels can be profiled: the profiler and its thread count."""
Fitter = Callable[[np.ndarray, np.ndarray], Callable[[np.ndarray], np.ndarray]]


def graph_oracle(kind: str) -> Fitter:
    """Fit ``ln(latency) - ln(prior)`` on graph features; predict latencies."""
    from sklearn.ensemble import ExtraTreesRegressor
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def fit(features: np.ndarray, latency: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
        model = (
            make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 3, 13)))
            if kind == "ridge"
            else ExtraTreesRegressor(300, min_samples_leaf=2, random_state=0, n_jobs=1)
        )
        model.fit(features, np.log(latency) - features[:, PRIOR_INDEX])
        return lambda x: np.exp(model.predict(x) + x[:, PRIOR_INDEX])

    return fit


def op_tokens(op: str) -> list[str]:
    """The words of a kernel's name: onnxruntime's op (``FusedConv``) is one, TVM's
    fused function (``fused_conv2d_packed1_add_relu``) several, variant numbers dropped."""
    return [t for t in re.split(r"[_\d]+", op) if t]


def kernel_vector(kernel: KernelTime, tokens: Sequence[str]) -> list[float]:
    """A kernel's name (counts of ``tokens``) and the logs of its sizes."""

    def dims(shapes: tuple[tuple[int, ...], ...], i: int) -> list[float]:
        shape = shapes[i] if i < len(shapes) else ()
        # Rank 4 (N, C, H, W); longer shapes fold their middle axes into C.
        if len(shape) > 4:
            shape = (shape[0], math.prod(shape[1:-2]), *shape[-2:])
        padded = (1,) * (4 - len(shape)) + tuple(shape)
        return [math.log1p(d) for d in padded]

    words = op_tokens(kernel.op)
    out_elements = math.prod(kernel.outputs[0]) if kernel.outputs else 0
    return (
        [float(words.count(t)) for t in tokens]
        + dims(kernel.inputs, 0)
        + dims(kernel.inputs, 1)
        + dims(kernel.outputs, 0)
        + [
            math.log1p(kernel.parameter_bytes),
            math.log1p(out_elements),
            math.log1p(kernel_flops(kernel)),
            float(len(kernel.inputs)),
        ]
    )


class KernelOracle:
    """Per-kernel trees on some graphs' profiles, summed and mapped to graph latency."""

    def __init__(self, profiles: Sequence[KernelProfile], latency: np.ndarray) -> None:
        from sklearn.ensemble import HistGradientBoostingRegressor

        self.tokens = sorted({t for p in profiles for k in p.kernels for t in op_tokens(k.op)})
        x = np.array([kernel_vector(k, self.tokens) for p in profiles for k in p.kernels])
        y = np.array([k.seconds for p in profiles for k in p.kernels])
        # Half a microsecond: the profiler's resolution is one, and log(0) is not a label.
        self.trees = HistGradientBoostingRegressor(
            max_iter=500, learning_rate=0.05, random_state=0
        ).fit(x, np.log(y + 5e-7))
        self.weights = _relative_fit(
            np.array([[p.kernel_sum_s, len(p.kernels)] for p in profiles]), latency
        )

    def kernel_sum(self, profile: KernelProfile) -> float:
        x = np.array([kernel_vector(k, self.tokens) for k in profile.kernels])
        return float(np.sum(np.exp(self.trees.predict(x)) - 5e-7))

    def predict(self, profiles: Sequence[KernelProfile], measured: bool = False) -> np.ndarray:
        sums = [p.kernel_sum_s if measured else self.kernel_sum(p) for p in profiles]
        return np.array([[s, len(p.kernels)] for s, p in zip(sums, profiles, strict=True)]) @ (
            self.weights
        )


def _relative_fit(columns: np.ndarray, latency: np.ndarray) -> np.ndarray:
    """Least squares of ``columns @ w = latency`` in relative error."""
    return np.linalg.lstsq(columns / latency[:, None], np.ones(len(latency)), rcond=None)[0]


def folds(n: int, count: int, seed: int) -> list[np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    return [order[i::count] for i in range(count)]


def cross_validated(
    n: int, count: int, seed: int, fit_predict: Callable[[np.ndarray, np.ndarray], np.ndarray]
) -> np.ndarray:
    """Every row predicted by a fit on the other folds."""
    predicted = np.zeros(n)
    for test in folds(n, count, seed):
        train = np.setdiff1d(np.arange(n), test)
        predicted[test] = fit_predict(train, test)
    return predicted


def profiles_of(samples: Sequence[Labeled], device: str, runs: int) -> list[KernelProfile]:
    profile, threads = PROFILERS[device]
    started = time.perf_counter()
    profiles = []
    for i, sample in enumerate(samples):
        profiles.append(profile(sample.load(), threads=threads, runs=runs))
        if (i + 1) % 50 == 0:
            print(f"  profiled {i + 1}/{len(samples)} ({time.perf_counter() - started:.0f} s)")
    return profiles


def cell(predicted: np.ndarray, measured: np.ndarray) -> str:
    rho, mape = score(predicted, measured)
    return f"{rho:.3f} / {100 * mape:.1f}%"


def graph_cell(
    fit: Fitter, features: np.ndarray, latency: np.ndarray, count: int, seed: int
) -> str:
    """A graph oracle cross-validated over a device's rows."""

    def fit_predict(train: np.ndarray, test: np.ndarray) -> np.ndarray:
        return fit(features[train], latency[train])(features[test])

    return cell(cross_validated(len(latency), count, seed, fit_predict), latency)


def kernel_study(
    data: DeviceRows, held: DeviceRows | None, device: str, args: argparse.Namespace
) -> tuple[list[str], list[str]]:
    """The kernel study's cells, all against the profiled runs' own medians (labels of
    one session: the dataset's were measured in another, and a second session differs
    by the floor and more): graph trees, kernels measured, kernel oracle;
    cross-validated on the device's rows, and fitted on all of them for the host's real
    models."""
    profiles = profiles_of(data.samples, device, args.runs)
    runs = np.array([p.run_s for p in profiles])
    trees = graph_oracle("trees")
    cells = [graph_cell(trees, data.features, runs, args.folds, args.seed)]
    for measured in (True, False):

        def fit_predict(
            train: np.ndarray, test: np.ndarray, measured: bool = measured
        ) -> np.ndarray:
            oracle = KernelOracle([profiles[i] for i in train], runs[train])
            return oracle.predict([profiles[i] for i in test], measured)

        cells.append(cell(cross_validated(len(profiles), args.folds, args.seed, fit_predict), runs))
    if held is None:
        return cells, []
    real_profiles = profiles_of(held.samples, device, args.runs)
    real_runs = np.array([p.run_s for p in real_profiles])
    oracle = KernelOracle(profiles, runs)
    real_cells = [cell(trees(data.features, runs)(held.features), real_runs)] + [
        cell(oracle.predict(real_profiles, measured), real_runs) for measured in (True, False)
    ]
    return cells, real_cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--dataset", type=Path, default=DATA / "meta_train_v2.jsonl.gz")
    parser.add_argument("--retest", type=Path, default=DATA / "meta_train_v2_retest.jsonl.gz")
    parser.add_argument("--host", type=Path, default=DATA / "host_real_v2.jsonl.gz")
    parser.add_argument("--devices", default="", help="comma-separated (default: all)")
    parser.add_argument("--kernel-device", default="ort-1t", choices=[*PROFILERS, "none"])
    parser.add_argument("--folds", type=int, default=10)
    parser.add_argument("--runs", type=int, default=40, help="profiled runs per graph")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    started = time.perf_counter()
    encoder = GraphEncoder()
    devices = dataset_devices(args.dataset, encoder)
    real = device_rows(dataset_devices(args.host, encoder), encoder)
    chosen = [d for d in args.devices.split(",") if d] or sorted(devices)
    rows = device_rows({d: devices[d] for d in chosen}, encoder)
    floor = {
        s.device: f"{s.rho:.3f} / {100 * s.mape:.1f}%"
        for s in retest_scores(
            devices, dataset_devices(args.retest, encoder), reference_keys(devices)
        )
    }
    fitters = {"graph ridge": graph_oracle("ridge"), "graph trees": graph_oracle("trees")}
    kernel_rows = args.kernel_device in chosen
    columns = ["floor (retest)", *fitters] + (
        ["graph trees, profiled runs", "kernels measured", "kernel oracle"] if kernel_rows else []
    )
    print("| device | rows | " + " | ".join(f"{c} rho / MAPE" for c in columns) + " |")
    print("|" + "---|" * (2 + len(columns)))
    for device in chosen:
        data, held = rows[device], real.get(device)
        cells = [floor.get(device, "n/a")]
        cells += [
            graph_cell(fit, data.features, data.latency, args.folds, args.seed)
            for fit in fitters.values()
        ]
        real_cells = [
            cell(fit(data.features, data.latency)(held.features), held.latency)
            for fit in fitters.values()
            if held
        ]
        if device == args.kernel_device:
            kernel_cells, kernel_real = kernel_study(data, held, device, args)
            cells += kernel_cells
            real_cells += kernel_real
        print(f"| {device} | {len(data.samples)} (10-fold) | " + " | ".join(cells) + " |")
        if held:
            print(
                f"| {device} | host-real ({len(held.samples)}) | n/a | "
                + " | ".join(real_cells)
                + " |"
            )
    print(
        f"\n{time.perf_counter() - started:.0f} s; {args.folds} folds, seed {args.seed}, "
        f"{args.runs} profiled runs per graph; {args.dataset.name}"
    )


if __name__ == "__main__":
    main()
