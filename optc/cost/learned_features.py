"""The learned latency model's graph encoder: a fixed-length vector per graph.

Every number comes from the roofline model's analysis (``RooflineModel.breakdown``) on
a fixed nominal CPU (``data/learned-encoder-cpu.toml``), never from hand counts: the
rule table's FLOPs and bytes per op class, kernel and node counts, where the roofline
says time goes (compute, memory, launches), dtype and convolution shape statistics,
and the roofline's own predicted latency. That prediction is the *prior*: the learned
part predicts ``ln(latency) - ln(prior)``. The nominal target keeps the features equal
on every machine, so a model trained here means the same elsewhere.

Vectors are cached by ``Graph.structural_hash()`` per encoder: a search scoring many
candidates prices each distinct graph once.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from functools import cached_property
from pathlib import Path

import numpy as np

from optc.cost.record import Breakdown, Cost, NodeCost
from optc.cost.roofline import RooflineModel
from optc.ir.graph import Graph, Node
from optc.target import Target, load_target_file

log = logging.getLogger(__name__)

ENCODER_VERSION = 1
"""Bumped whenever a feature changes: a model file records the version it was fit with."""
ENCODER_TARGET = Path(__file__).parent / "data" / "learned-encoder-cpu.toml"
OP_CLASSES = ("conv", "matmul", "elementwise", "norm", "pool", "reduce", "softmax", "data", "other")
_GLOBAL = (
    "ln_prior",
    "ln_flops",
    "ln_bytes",
    "ln_param_bytes",
    "ln_input_elems",
    "ln_kernels",
    "ln_nodes",
    "ln_compute_s",
    "ln_memory_s",
    "ln_launch_s",
    "share_compute",
    "share_memory",
    "share_launch",
    "share_max_kernel",
    "share_int8_flops",
    "share_f16_flops",
    "share_transcendental",
    "share_depthwise_flops",
    "ln_conv_kernel_area",
    "ln_mean_kernel_flops",
)
FEATURE_NAMES: tuple[str, ...] = _GLOBAL + tuple(
    f"{stat}_{cls}" for cls in OP_CLASSES for stat in ("ln_mflops", "ln_kbytes", "share", "ln_n")
)
PRIOR_INDEX = 0  # FEATURE_NAMES[0] is ln(prior latency)
PACKAGED_FEATURES = Path(__file__).parent / "data" / f"learned_features_v{ENCODER_VERSION}.npz"
"""Features of the shipped dataset's graphs, so that training does not rebuild them all
(regenerate with ``optc latency train``'s cache: ``GraphEncoder.save_cache``)."""
PRIOR_GROUPS: tuple[tuple[str, ...], ...] = (
    ("conv",),
    ("matmul",),
    tuple(c for c in OP_CLASSES if c not in ("conv", "matmul")),
)
"""Op-class groups of the fitted prior (``prior_columns``): few enough to fit from K = 10
samples, split where runtimes differ most (int8 convolutions slow, int8 MatMuls fast)."""
PRIOR_MODES = ("roofline", "fitted", "fitted-depthwise")
"""What the learned network corrects (``MetaConfig.prior``): the nominal roofline alone;
the fitted prior over ``PRIOR_GROUPS`` and the node count; the same with the convolution
group split into dense and depthwise convolutions (``prior_columns(depthwise=True)``)."""


def _ln(value: float) -> float:
    return math.log(max(value, 1e-12))


class GraphEncoder:
    """Graph -> feature vector (``FEATURE_NAMES`` order), cached by structural hash."""

    def __init__(self, target: Target | None = None) -> None:
        self._target = target
        self._roofline = RooflineModel()
        self._cache: dict[str, tuple[np.ndarray, Cost]] = {}

    @cached_property
    def target(self) -> Target:
        return self._target or load_target_file(ENCODER_TARGET)

    def encode(self, graph: Graph) -> np.ndarray:
        return self.encode_key(graph.structural_hash(), lambda: graph)

    def encode_key(self, key: str, load: Callable[[], Graph]) -> np.ndarray:
        """The features cached under ``key``, computed from ``load()`` on a miss."""
        found = self._cache.get(key)
        if found is None:
            graph = load()
            breakdown = self.breakdown(graph)
            found = self._cache[key] = (features(graph, breakdown), breakdown.total)
        return found[0]

    def __len__(self) -> int:
        return len(self._cache)

    def totals(self, graph: Graph) -> Cost:
        """The roofline's totals (FLOPs, bytes, launches) on the encoding target."""
        key = graph.structural_hash()
        self.encode_key(key, lambda: graph)
        return self._cache[key][1]

    def encode_many(self, graphs: Iterable[Graph]) -> np.ndarray:
        vectors = [self.encode(g) for g in graphs]
        return np.stack(vectors) if vectors else np.zeros((0, len(FEATURE_NAMES)))

    def breakdown(self, graph: Graph) -> Breakdown:
        return self._roofline.breakdown(graph, self.target)

    def remember(self, key: str, vector: np.ndarray, total: Cost) -> None:
        """Seed the cache (a dataset's precomputed features)."""
        self._cache[key] = (np.asarray(vector, dtype=np.float64), total)

    def save_cache(self, path: Path) -> None:
        """Store the cached features (``.npz``), so that a dataset's graphs are built and
        priced once across runs."""
        keys = sorted(self._cache)
        vectors = np.stack([self._cache[k][0] for k in keys]) if keys else np.zeros((0, 0))
        totals = np.array(
            [[c.latency_s, c.flops, c.bytes, c.launches] for c in (self._cache[k][1] for k in keys)]
        ).reshape(-1, 4)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(path.name + ".tmp.npz")
        np.savez(
            temporary, version=ENCODER_VERSION, keys=np.array(keys), vectors=vectors, totals=totals
        )
        temporary.replace(path)

    def load_cache(self, path: Path) -> int:
        """Add features stored by ``save_cache`` (of this encoder version); how many."""
        if not path.is_file():
            return 0
        with np.load(path) as stored:
            if int(stored["version"]) != ENCODER_VERSION:
                return 0
            for key, vector, total in zip(
                stored["keys"], stored["vectors"], stored["totals"], strict=True
            ):
                cost = Cost(float(total[0]), float(total[1]), float(total[2]), int(total[3]))
                self._cache.setdefault(str(key), (vector.astype(np.float64), cost))
        return len(self._cache)


def features(graph: Graph, breakdown: Breakdown) -> np.ndarray:
    """The feature vector of ``graph`` from its roofline ``breakdown``."""
    rows = [r for r in breakdown.nodes if r.kernel]
    total = breakdown.total
    prior = max(total.latency_s, 1e-9)
    nodes = {n.name: n for n in graph.nodes}
    kernels: dict[str, float] = {}
    for row in rows:
        kernels[row.kernel] = kernels.get(row.kernel, 0.0) + row.latency_s
    flops = max(total.flops, 1.0)
    conv_flops = sum(r.flops for r in rows if r.op_class == "conv")
    glob = [
        _ln(prior),
        _ln(flops),
        _ln(max(total.bytes, 1.0)),
        _ln(_param_bytes(graph) + 1.0),
        _ln(_input_elements(graph) + 1.0),
        math.log1p(len(kernels)),
        math.log1p(len(rows)),
        _ln(sum(r.compute_s for r in rows)),
        _ln(sum(r.memory_s for r in rows)),
        _ln(sum(r.launch_s for r in rows)),
        _bound_share(rows, "compute", prior),
        _bound_share(rows, "memory", prior),
        _bound_share(rows, "launch", prior),
        max(kernels.values(), default=0.0) / prior,
        sum(r.flops for r in rows if r.dtype.startswith(("int", "uint"))) / flops,
        sum(r.flops for r in rows if r.dtype in ("float16", "bfloat16")) / flops,
        sum(r.transcendentals for r in rows) / flops,
        sum(r.flops for r in rows if _depthwise(nodes.get(r.name))) / max(conv_flops, 1.0),
        _ln(_mean_kernel_area(graph) + 1.0),
        _ln(flops / max(len(kernels), 1)),
    ]
    per_class = []
    for cls in OP_CLASSES:
        mine = [r for r in rows if r.op_class == cls]
        per_class += [
            math.log1p(sum(r.flops for r in mine) / 1e6),
            math.log1p(sum(r.bytes for r in mine) / 1e3),
            sum(r.latency_s for r in mine) / prior,
            math.log1p(len(mine)),
        ]
    return np.asarray(glob + per_class, dtype=np.float64)


PRESENT_SHARE = 0.05


def prior_columns(vectors: np.ndarray, depthwise: bool = False) -> np.ndarray:
    """Per row of feature vectors, the columns of the fitted prior: the nominal roofline's
    busy seconds of each ``PRIOR_GROUPS`` group, then the node count. A device's latency
    is modelled as their non-negative combination (``fit_prior``): seconds
    per roofline-second per group (an inverse efficiency) and seconds per node (eager
    runtimes pay a fixed cost per op, which no FLOP count expresses).

    With ``depthwise`` the convolution column is split in two, dense then depthwise, by
    the depthwise share of convolution FLOPs (the features hold no per-kind busy time:
    a FLOP split, so the two still add up to the group). Runtimes differ most there:
    on the shipped data, onnxruntime's dynamic int8 runs depthwise convolutions far
    slower than dense ones (the all-rows fit's MAPE on ``ort-int8-1t``: 33 % -> 22 %)."""
    vectors = np.atleast_2d(vectors)
    index = {name: i for i, name in enumerate(FEATURE_NAMES)}
    prior = np.exp(vectors[:, PRIOR_INDEX])
    busy = [
        prior * vectors[:, [index[f"share_{c}"] for c in group]].sum(axis=1)
        for group in PRIOR_GROUPS
    ]
    # Time the roofline charges to no node's class (transfers, kernels without a row)
    # joins the last, memory-bound group, so that the groups add up to the roofline.
    busy[-1] = busy[-1] + np.maximum(prior - np.sum(busy, axis=0), 0.0)
    if depthwise:
        share = np.clip(vectors[:, index["share_depthwise_flops"]], 0.0, 1.0)
        busy = [busy[0] * (1.0 - share), busy[0] * share, *busy[1:]]
    return np.stack([*busy, np.expm1(vectors[:, index["ln_nodes"]])], axis=1)


def fit_prior(columns: np.ndarray, latency: np.ndarray) -> np.ndarray:
    """Non-negative weights of ``prior_columns`` that fit ``latency`` in relative error.

    A group that takes under ``PRESENT_SHARE`` of every sample's nominal roofline time
    cannot be told from noise: it gets the mean weight of the fitted groups (10 samples
    without a convolution must not make convolutions free, or infinitely slow).
    """
    from scipy.optimize import nnls  # deferred: only fitting needs scipy

    busy = columns[:, :-1]
    present = np.append(
        np.max(busy / np.maximum(busy.sum(axis=1, keepdims=True), 1e-30), axis=0) >= PRESENT_SHARE,
        True,
    )  # the node count is always there
    scale = np.maximum(columns[:, present].max(axis=0), 1e-30)  # for nnls's numerics
    solved, _ = nnls(columns[:, present] / scale / latency[:, None], np.ones(len(latency)))
    weights = np.zeros(columns.shape[1])
    weights[present] = solved / scale
    fitted = weights[:-1][present[:-1] & (weights[:-1] > 0)]
    typical = (
        float(fitted.mean())
        if fitted.size
        else float(np.exp(np.mean(np.log(latency / np.maximum(busy.sum(axis=1), 1e-30)))))
    )
    weights[:-1][~present[:-1]] = typical
    if not np.any(columns @ weights > 0):  # nothing fitted: the roofline times one factor
        weights[:-1] = typical
    return weights


def prior_log(columns: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ln of the fitted prior's latency (floored: a row with no fitted time gets 1 ns)."""
    return np.log(np.maximum(columns @ weights, 1e-9))


def _bound_share(rows: list[NodeCost], bound: str, prior: float) -> float:
    return sum(r.latency_s for r in rows if r.bound == bound) / prior


def _param_bytes(graph: Graph) -> float:
    return float(sum(np.asarray(a).nbytes for a in graph.params.values()))


def _input_elements(graph: Graph) -> float:
    sizes = [math.prod(v.shape) for v in graph.inputs if v.is_static() and v.shape]
    return float(sum(sizes))


def _depthwise(node: Node | None) -> bool:
    return node is not None and node.op == "Conv" and int(node.attrs.get("group", 1)) > 1


def _mean_kernel_area(graph: Graph) -> float:
    """Mean spatial area of convolution kernels (3x3 -> 9); 0 without convolutions."""
    areas = []
    for node in graph.nodes:
        shape = node.attrs.get("kernel_shape") if node.op == "Conv" else None
        if shape is not None:
            areas.append(math.prod(int(d) for d in shape))
        elif node.op == "Conv" and graph.has_value(node.inputs[1]):
            weight = graph.value(node.inputs[1]).shape
            if weight and all(isinstance(d, int) for d in weight[2:]):
                areas.append(math.prod(weight[2:]))  # type: ignore[arg-type]
    return float(np.mean(areas)) if areas else 0.0
