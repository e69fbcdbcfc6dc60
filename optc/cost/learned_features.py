"""The learned latency model's graph encoder: a fixed-length vector per graph.

Every number comes from the roofline model's analysis (``RooflineModel.breakdown``) on
a fixed nominal CPU (``data/learned-encoder-cpu.toml``), never from hand counts: the
rule table's FLOPs and bytes per op class, kernel and node counts, where the roofline
says time goes (compute, memory, launches), dtype and convolution shape statistics,
and the roofline's own predicted latency. That prediction is the *prior*: the learned
part predicts ``ln(latency) - ln(prior)``. The nominal target keeps the features equal
on every machine, so a model trained here means the same elsewhere. Since v2 the
roofline's node times are also split by the shapes a vectorized, register-tiled
schedule is sensitive to (``SCHEDULE_NAMES``: channel widths, kernel sizes, output
widths, depthwise, matrix-vector and attention products, calls per op family).

Vectors are cached by ``Graph.structural_hash()`` per encoder: a search scoring many
candidates prices each distinct graph once.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Iterable
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from optc.cost.record import Breakdown, Cost, NodeCost
from optc.cost.roofline import RooflineModel
from optc.cost.shapes import complete_shapes
from optc.ir.graph import Graph, Node
from optc.target import Target, load_target_file

log = logging.getLogger(__name__)

ENCODER_VERSION = 2
"""Bumped whenever a feature changes: a model file records the version it was fit with.
v2 appended ``SCHEDULE_NAMES`` (v1's 56 features keep their places)."""
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
SCHEDULE_NAMES = (
    # Dense convolutions: shares of the nominal roofline time by the shape properties
    # a vectorized, register-tiled schedule is sensitive to.
    "share_conv_cout_le16",  # one or two SIMD vectors of output channels per tile
    "share_conv_cout_le32",
    "share_conv_cin_le16",  # a short reduction per output
    "share_conv_cin_le4",  # the RGB stem
    "share_conv_k1",
    "share_conv_k3",
    "share_conv_k5up",
    "share_conv_narrow_k5up",  # 5x5 / 7x7 with 32 or fewer channels in or out
    "share_conv_wout_lt8",  # fewer output columns than a register tile has rows
    "share_conv_wout_ge32",
    "share_conv_strided",
    # Depthwise convolutions (a schedule and an efficiency of their own).
    "share_dw",
    "share_dw_k5up",
    "share_dw_wout_lt8",
    "share_dw_strided",
    "ln_dw_channels",
    "ln_n_dw",
    # Dense convolution geometry, FLOP-weighted means of logs.
    "ln_conv_cout",
    "ln_conv_cin",
    "ln_conv_wout",
    "ln_conv_kernel_area_flops",  # v1's ln_conv_kernel_area is the unweighted mean
    "ln_n_dense_conv",
    # MatMul / Gemm: matrix-vector products (memory-bound), products of two computed
    # tensors (attention), and the FLOP-weighted geometry.
    "share_matmul_gemv",
    "share_matmul_activations",
    "ln_matmul_rows",
    "ln_matmul_cols",
    "ln_matmul_depth",
    "ln_n_matmul_ops",  # MatMul / Gemm nodes (v1's ln_n_matmul: the matmul class's rows)
    # Calls per op family: small models are dominated by per-op overheads, and runtimes
    # differ in which ops they fuse away.
    "ln_n_elementwise_ops",
    "ln_n_shape_ops",
    "ln_n_norm_ops",
    "ln_n_ops",
)
"""The schedule-aware features (encoder v2): what a schedule does with a shape, which
FLOPs and bytes alone do not say (``schedule_features``)."""
FEATURE_NAMES: tuple[str, ...] = (
    _GLOBAL
    + tuple(
        f"{stat}_{cls}"
        for cls in OP_CLASSES
        for stat in ("ln_mflops", "ln_kbytes", "share", "ln_n")
    )
    + SCHEDULE_NAMES
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
    return np.asarray(glob + per_class + schedule_features(graph, rows, prior), dtype=np.float64)


_ELEMENTWISE_OPS = frozenset(
    (
        "Add",
        "Sub",
        "Mul",
        "Div",
        "Pow",
        "Sqrt",
        "Relu",
        "Clip",
        "Sigmoid",
        "HardSwish",
        "Erf",
        "Tanh",
        "Sum",
        "Where",
    )
)
_SHAPE_OPS = frozenset(
    (
        "Reshape",
        "Transpose",
        "Concat",
        "Split",
        "Slice",
        "Gather",
        "Shape",
        "Unsqueeze",
        "Squeeze",
        "Flatten",
        "Expand",
        "Cast",
        "Pad",
    )
)
_NORM_OPS = frozenset(("LayerNormalization", "BatchNormalization", "ReduceMean"))
_FREE_OPS = frozenset(("Constant", "Identity", "Dropout"))  # no work at run time


@dataclasses.dataclass(frozen=True)
class _Conv:
    cin: int
    cout: int
    group: int
    kernel: int  # the larger kernel side
    stride: int
    wout: int
    time: float  # the roofline row's seconds
    flops: float


@dataclasses.dataclass(frozen=True)
class _MatMul:
    rows: int  # output rows (all but the last output axis)
    cols: int
    depth: int
    constant: bool  # the right operand is a weight
    time: float
    flops: float


def schedule_features(graph: Graph, rows: list[NodeCost], prior: float) -> list[float]:
    """``SCHEDULE_NAMES`` of ``graph``: convolution and MatMul shapes weighted by their
    roofline time or FLOPs, and op counts per family. The data behind them
    (``docs/latency-dataset.md``): with v1's features alone, an oracle fitted on every row
    of a device left narrow 5x5 / 7x7 CNNs 2-7x slower than predicted on TVM."""
    sized = complete_shapes(graph)  # exporters leave some shapes to run time
    nodes = {n.name: n for n in sized.nodes}
    convs: list[_Conv] = []
    matmuls: list[_MatMul] = []
    for row in rows:
        node = nodes.get(row.name)
        if node is None:
            continue
        if node.op == "Conv":
            conv = _conv(sized, node, row)
            if conv is not None:
                convs.append(conv)
        elif node.op in ("MatMul", "Gemm"):
            matmul = _matmul(sized, node, row)
            if matmul is not None:
                matmuls.append(matmul)
    dense = [c for c in convs if c.group == 1]
    depthwise = [c for c in convs if c.group > 1]

    def share(items: Iterable[_Conv] | Iterable[_MatMul]) -> float:
        return sum(i.time for i in items) / prior

    def mean_log(items: list[Any], value: Callable[[Any], float]) -> float:
        total = sum(i.flops for i in items)
        return sum(i.flops * math.log(max(value(i), 1)) for i in items) / total if total else 0.0

    ops = sized.op_histogram()
    return [
        share(c for c in dense if c.cout <= 16),
        share(c for c in dense if c.cout <= 32),
        share(c for c in dense if c.cin <= 16),
        share(c for c in dense if c.cin <= 4),
        share(c for c in dense if c.kernel == 1),
        share(c for c in dense if c.kernel == 3),
        share(c for c in dense if c.kernel >= 5),
        share(c for c in dense if c.kernel >= 5 and min(c.cin, c.cout) <= 32),
        share(c for c in dense if c.wout < 8),
        share(c for c in dense if c.wout >= 32),
        share(c for c in dense if c.stride > 1),
        share(depthwise),
        share(c for c in depthwise if c.kernel >= 5),
        share(c for c in depthwise if c.wout < 8),
        share(c for c in depthwise if c.stride > 1),
        mean_log(depthwise, lambda c: c.cout),
        math.log1p(len(depthwise)),
        mean_log(dense, lambda c: c.cout),
        mean_log(dense, lambda c: c.cin),
        mean_log(dense, lambda c: c.wout),
        mean_log(dense, lambda c: c.kernel**2),
        math.log1p(len(dense)),
        share(m for m in matmuls if m.rows < 8),
        share(m for m in matmuls if not m.constant),
        mean_log(matmuls, lambda m: m.rows),
        mean_log(matmuls, lambda m: m.cols),
        mean_log(matmuls, lambda m: m.depth),
        math.log1p(len(matmuls)),
        math.log1p(sum(n for op, n in ops.items() if op in _ELEMENTWISE_OPS)),
        math.log1p(sum(n for op, n in ops.items() if op in _SHAPE_OPS)),
        math.log1p(sum(n for op, n in ops.items() if op in _NORM_OPS)),
        math.log1p(sum(n for op, n in ops.items() if op not in _FREE_OPS)),
    ]


def _dim(value: Any) -> int:
    """A static size, or 1 for a symbolic one (the feature then describes less)."""
    return value if isinstance(value, int) and value > 0 else 1


def _shape(graph: Graph, name: str) -> tuple[int, ...] | None:
    if not graph.has_value(name):
        return None
    shape = graph.value(name).shape
    return None if shape is None else tuple(_dim(d) for d in shape)


def _conv(graph: Graph, node: Node, row: NodeCost) -> _Conv | None:
    weight = _shape(graph, node.inputs[1]) if len(node.inputs) > 1 else None
    out = node.outputs[0].shape if node.outputs else None
    if weight is None or len(weight) < 3 or not out:
        return None
    group = int(node.attrs.get("group", 1))
    strides = node.attrs.get("strides") or (1,)
    return _Conv(
        cin=weight[1] * group,
        cout=weight[0],
        group=group,
        kernel=max(weight[2:]),
        stride=int(max(strides)),
        wout=_dim(out[-1]) if len(out) > 2 else 1,
        time=row.latency_s,
        flops=row.flops,
    )


def _matmul(graph: Graph, node: Node, row: NodeCost) -> _MatMul | None:
    left = _shape(graph, node.inputs[0])
    out = node.outputs[0].shape if node.outputs else None
    if not left or not out:
        return None
    dims = [_dim(d) for d in out]
    transposed = node.op == "Gemm" and int(node.attrs.get("transA", 0))
    return _MatMul(
        rows=math.prod(dims[:-1]) if len(dims) > 1 else 1,
        cols=dims[-1],
        depth=left[-2] if transposed and len(left) > 1 else left[-1],
        constant=node.inputs[1] in graph.params,
        time=row.latency_s,
        flops=row.flops,
    )


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
