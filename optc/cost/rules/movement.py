"""Data movement, views, shape queries and generators: bytes, few or no operations.

Views (Reshape, Squeeze, Unsqueeze, Flatten, Identity, inference Dropout) alias their
input: no traffic, no launch. Shape queries (Shape, Size, Constant) are answered by
the compiler. Everything else reads its input and writes its output; gathers and
slices read only the elements they keep.
"""

from __future__ import annotations

from optc.cost.work import NodeView, Work

VIEWS = ("Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity", "Dropout")
META = ("Shape", "Size", "Constant")
COPIES = ("Transpose", "DepthToSpace", "SpaceToDepth", "Tile", "Expand", "Pad", "Concat",
          "Split", "Trilu", "Cast", "CastLike", "ScatterND", "ScatterElements", "Scatter")


def view_rule(view: NodeView) -> Work:
    return Work(kind="view", op_class="data")


def meta_rule(view: NodeView) -> Work:
    return Work(kind="meta", op_class="data")


def copy(view: NodeView) -> Work:
    names = [n for n in view.node.inputs if n]
    if view.node.op == "CastLike":
        names = names[:1]  # the second input gives only a dtype
    return view.work(op_class="data", reads=view.reads(names))


def _partial(view: NodeView, data_index: int, kept_index: int = 0) -> Work:
    """Read the index inputs whole and, of the data, as many bytes as the output keeps."""
    data = view.input(data_index)
    kept = view.out_numel(kept_index) * view.nbytes(data) / max(view.numel(data), 1)
    others = [n for i, n in enumerate(view.node.inputs) if n and i != data_index]
    return view.work(op_class="data", reads=((data, kept), *view.reads(others)))


def gather(view: NodeView) -> Work:
    return _partial(view, 0)


def slice_rule(view: NodeView) -> Work:
    return _partial(view, 0)


def generate(view: NodeView) -> Work:
    """ConstantOfShape, EyeLike, Range, OneHot: the output is written, not read."""
    names = [n for n in view.node.inputs if n]
    if view.node.op == "EyeLike":
        names = []  # only the shape of its input matters
    return view.work(view.out_numel(0) if view.node.op == "OneHot" else 0, op_class="data",
                     reads=view.reads(names))


def resize(view: NodeView) -> Work:
    """Nearest moves bytes only; linear blends 2 neighbours per resized axis, cubic 4."""
    mode = str(view.node.attr("mode", "nearest"))
    x, out = view.in_shape(0), view.out_shape(0)
    resized = sum(1 for a, b in zip(x, out, strict=True) if a != b)
    taps = {"linear": 2, "bilinear": 2, "cubic": 4}.get(mode, 0) ** resized
    data = [view.input(0)]  # roi / scales / sizes are tiny constants
    return view.work(2 * taps * view.out_numel(0), op_class="elementwise" if taps else "data",
                     reads=view.reads(data))


def non_zero(view: NodeView) -> Work:
    """ASSUMPTION (data-dependent output): every element is non-zero, an upper bound."""
    elements = view.in_numel(0)
    rank = len(view.in_shape(0))
    return view.work(elements, op_class="data", writes=((view.output(0), 8.0 * rank * elements),))


def compress(view: NodeView) -> Work:
    """ASSUMPTION (data-dependent output): every slice is kept, an upper bound."""
    out = view.value(view.output(0))
    written = view.nbytes(view.output(0)) if out.is_static() else view.nbytes(view.input(0))
    return view.work(view.in_numel(0), op_class="data", writes=((view.output(0), written),))


RULES = {
    **dict.fromkeys(VIEWS, view_rule), **dict.fromkeys(META, meta_rule),
    **dict.fromkeys(COPIES, copy),
    "Gather": gather, "GatherElements": gather, "GatherND": gather, "Slice": slice_rule,
    "ConstantOfShape": generate, "EyeLike": generate, "Range": generate, "OneHot": generate,
    "Resize": resize, "Upsample": resize, "NonZero": non_zero, "Compress": compress,
}
