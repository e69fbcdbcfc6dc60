"""Write a per-layer precision assignment into the IR as real low-precision ops.

Forms (``x`` the layer's activation input, ``W`` its weight, ``b`` its bias):

- ``w8a8`` / ``w4a8``: ONNX QDQ, the form of onnxruntime's ``quantize_static`` and the
  one TVM's ONNX frontend imports (``relax.op.quantize`` / ``dequantize``)::

      %x.q   = QuantizeLinear(%x, %x.scale, %x.zero)             # uint8, per tensor
      %x.dq  = DequantizeLinear(%x.q, %x.scale, %x.zero)
      %W.dq  = DequantizeLinear(%W.q8, %W.scale8) {axis=c}       # int8 param, per channel
      %y     = Conv(%x.dq, %W.dq, %b)

- ``w8a16`` / ``w4a16``: weight-only integers, float16 compute::

      %x.fp16  = Cast(%x) {to=FLOAT16}
      %W.dq    = DequantizeLinear(%W.q4, %W.scale4) {axis=c}
      %W.dq16  = Cast(%W.dq) {to=FLOAT16}
      %y.fp16  = Conv(%x.fp16, %W.dq16, %b.fp16);  %y = Cast(%y.fp16) {to=FLOAT}

- ``fp16``: float16 weights and compute, the layer wrapped in Casts.

The 16-bit float type is ``half_dtype``: float16, or bfloat16 where the target runs
bfloat16 contractions natively (``optc.quant.kernels.half_dtype``). A bfloat16 layer is
written as float32 arithmetic on bfloat16 values, which is what AVX-512 BF16's
``vdpbf16ps`` computes (exact products, float32 sums) and valid ONNX at every opset
(ONNX types a bfloat16 Conv only from opset 22; onnxruntime runs this form)::

      %x.bf16  = Cast(%x) {to=BFLOAT16};  %x.bf16v = Cast(%x.bf16) {to=FLOAT}
      %W.bf16v = Cast(%W.bf16) {to=FLOAT}                        # ml_dtypes bfloat16 param
      %y       = Conv(%x.bf16v, %W.bf16v, %b)                    # float32 bias and output

The code generator recognizes it (``optc.codegen.quantized``: a float32 contraction of
an activation rounded to bfloat16 and a weight whose values are all bfloat16) and runs
it on bfloat16 operands. ``Precision(16, "bfloat")`` on the activation's float32 view
gives the roofline its compute dtype (``peak_flops.bfloat16``), the same tag on the
weight's view its bytes; the node carries it for the report.

An activation with outlier channels (``smoothing``: per-channel divisors ``m`` from
``numerics.outlier_smoothing``) is divided by them before it is quantized, and the
integer layers reading it quantize ``m * W`` (rows of the input axis) instead of ``W``::

      %x.s   = Mul(%x, %x.inv_m)                                 # fused into x's producer
      %x.q   = QuantizeLinear(%x.s, %x.scale, %x.zero)           # ranges: those of %x.s
      %W.dq  = DequantizeLinear(%Ws.q8, %Ws.scale8) {axis=c}     # Ws = m[:, None] * W

4-bit weights are stored as int8 codes in [-7, 7], not as ONNX ``INT4``: ``INT4``
needs opset 21 (this repo's models are opset 17 and converting the whole model is a
larger change), TVM 0.27's ONNX frontend fails to import ``INT4`` initializers
(``TensorCopyFromBytes: size mismatch``) and optc's reference interpreter has no 4-bit
dtype. The ``Precision(bits=4)`` annotation on the weight's DequantizeLinear output
tells the cost model and code generator the packed size. Biases stay float (onnxruntime
and TVM accept a float bias after QDQ).

The inserted conversions carry the layer's ``FusionGroup`` (its existing one, else one
named after the layer's output value): a QDQ or Cast-wrapped layer is meant to run as
one quantized kernel, as onnxruntime's QDQ fusion and TVM's operator fusion run it, and
the roofline model prices a fusion group as one kernel. An activation quantizer shared
by several layers joins the first one's group.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import onnx

from optc.errors import UserInputError
from optc.ir.annotations import FusionGroup, Precision
from optc.ir.graph import Graph, Node, Value
from optc.ir.rewrite import NameSource, drop_unused_params, replace_nodes
from optc.quant.layers import Layer
from optc.quant.numerics import (
    FP32,
    LayerPrecision,
    activation_qparams,
    code_bits,
    half_numpy_dtype,
    quantize_weight,
)

QDQ_MIN_OPSET = 13  # per-axis DequantizeLinear
HALF_TYPES = {"float16": (onnx.TensorProto.FLOAT16, "fp16", "float"),
              "bfloat16": (onnx.TensorProto.BFLOAT16, "bf16", "bfloat")}
"""16-bit float type -> (ONNX Cast ``to``, value-name suffix, ``Precision.dtype``)."""
ActRanges = Mapping[str, tuple[float, float]]
Smoothing = Mapping[str, np.ndarray]
"""Activation -> per-channel divisors (last axis) applied before it is quantized."""
WeightCache = dict[tuple[str, int], tuple[np.ndarray, np.ndarray]]
"""(weight param, bits) -> (codes, scales): quantized once per search, not per trial."""


def emit(graph: Graph, layers: Sequence[Layer], assignment: Mapping[str, LayerPrecision],
         ranges: ActRanges, cache: WeightCache | None = None,
         int8_code_bits: int = 8, smoothing: Smoothing | None = None,
         half_dtype: str = "float16") -> Graph:
    """``graph`` with each layer in ``assignment`` lowered to its precision; the same
    graph object when every assigned precision is fp32. 8-bit weights are quantized to
    ``int8_code_bits``-bit codes (7: ``optc.quant.kernels``), stored as int8.
    ``smoothing``: divisors of activations read by 2-D weights (MatMul, Gemm); their
    ``ranges`` are those of the divided activation. 16-bit activations and float weights
    are ``half_dtype``: "float16" or "bfloat16"."""
    chosen = [(layer, assignment[layer.key]) for layer in layers
              if assignment.get(layer.key, FP32) != FP32]
    if not chosen:
        return graph
    if any(p.integer_weights for _, p in chosen) and default_opset(graph) < QDQ_MIN_OPSET:
        raise UserInputError(f"integer quantization needs opset >= {QDQ_MIN_OPSET} "
                             f"(per-channel DequantizeLinear); the model is opset "
                             f"{default_opset(graph)}: use bits=16 or convert the model")
    writer = _Writer(graph, ranges, {} if cache is None else cache, int8_code_bits,
                     smoothing or {}, half_dtype)
    replacements = {graph.producer(layer.key): writer.lower(layer, precision)
                    for layer, precision in chosen}
    edited = replace_nodes(graph, replacements).replace(params=writer.params)
    return drop_unused_params(edited)


def takes_smoothing(graph: Graph, layer: Layer, channels: int) -> bool:
    """Whether ``layer`` can take smoothing divisors of its activation's last axis
    (``channels`` of them) into its weight: a 2-D MatMul / Gemm weight whose input axis
    runs over that last axis (Gemm without ``transA``)."""
    node = graph.producer(layer.key)
    weight = graph.params[layer.weight]
    if layer.op not in ("MatMul", "Gemm") or weight.ndim != 2 or node is None:
        return False
    if layer.op == "Gemm" and int(node.attr("transA", 0)):
        return False
    return int(weight.shape[1 - layer.channel_axis]) == channels


def default_opset(graph: Graph) -> int:
    return int(graph.opsets.get("", graph.opsets.get("ai.onnx", 0)) or 0)


class _Writer:
    """Builds the replacement nodes; activation Q/DQ and Casts are shared between layers
    reading the same value."""

    def __init__(self, graph: Graph, ranges: ActRanges, cache: WeightCache,
                 int8_code_bits: int = 8, smoothing: Smoothing | None = None,
                 half_dtype: str = "float16") -> None:
        if half_dtype not in HALF_TYPES:
            raise ValueError(f"half_dtype must be one of {sorted(HALF_TYPES)}, "
                             f"not {half_dtype!r}")
        self.graph = graph
        self.half = half_dtype
        self.half_to, self.half_suffix, self.half_kind = HALF_TYPES[half_dtype]
        self.smoothing = smoothing or {}
        self.int8_code_bits = int8_code_bits
        self.ranges = ranges
        self.cache = cache
        self.params: dict[str, np.ndarray] = dict(graph.params)
        self.names = NameSource(graph)
        self.shared: dict[tuple[str, str], str] = {}

    def fresh(self, hint: str) -> str:
        return self.names.fresh(hint)

    def lower(self, layer: Layer, precision: LayerPrecision) -> list[Node]:
        node = self.graph.producer(layer.key)
        assert node is not None  # layers come from this graph
        before: list[Node] = []
        tag = Precision(precision.weight_bits,
                        "int" if precision.integer_weights else self.half_kind,
                        per_channel=precision.integer_weights)
        group = next((a for a in node.annotations if isinstance(a, FusionGroup)),
                     FusionGroup(layer.key))  # value names are unique: no clash
        kept = tuple(a for a in node.annotations if not isinstance(a, Precision | FusionGroup))
        annotations = (*kept, tag, group)
        weight = self._weight(layer, precision, tag, before)
        if precision.act_bits == 8:
            data = self._quantized_activation(layer, before)
            lowered = [*before, node.replace(inputs=(data, weight, *node.inputs[2:]),
                                             annotations=annotations)]
            return _grouped(lowered, group)
        if self.half == "bfloat16":  # float32 arithmetic on bfloat16 values (docstring)
            data = self._bf16_values(layer.activation, before)
            shape = tuple(int(d) for d in self.graph.params[layer.weight].shape)
            wide = self._widened_weight(weight, shape, tag, before)
            core = node.replace(inputs=(data, wide, *node.inputs[2:]), annotations=annotations)
            return _grouped([*before, core], group)
        data = self._cast_shared(layer.activation, before)
        bias = self._half_param(layer.bias) if layer.bias else ""
        out = node.outputs[0]
        half = Value(self.fresh(f"{out.name}.{self.half_suffix}"), self.half, out.shape)
        inputs = (data, weight, *([bias] if layer.bias else []), *node.inputs[3:])
        core = node.replace(inputs=inputs, outputs=(half, *node.outputs[1:]),
                            annotations=annotations)
        back = Node("Cast", (half.name,), (out,), {"to": onnx.TensorProto.FLOAT},
                    name=f"{node.name or out.name}.cast_out")
        return _grouped([*before, core, back], group)

    def _weight(self, layer: Layer, precision: LayerPrecision, tag: Precision,
                before: list[Node]) -> str:
        if not precision.integer_weights:
            return self._half_param(layer.weight)
        bits = code_bits(precision, self.int8_code_bits)
        divisors = self._divisors(layer) if precision.act_bits == 8 else None
        key = (layer.weight if divisors is None else f"{layer.weight}*smoothed", bits)
        if key not in self.cache:
            array = self.graph.params[layer.weight]
            if divisors is not None:  # rows along the input axis times the divisors
                shape = [1, 1]
                shape[1 - layer.channel_axis] = -1
                array = (array * divisors.reshape(shape)).astype(np.float32)
            self.cache[key] = quantize_weight(array, bits, layer.channel_axis)
        q, scale = self.cache[key]
        q_name = self.fresh(f"{layer.weight}.q{bits}")
        s_name = self.fresh(f"{layer.weight}.scale{bits}")
        self.params[q_name], self.params[s_name] = q, scale
        shape = tuple(int(d) for d in q.shape)
        out = Value(self.fresh(f"{layer.weight}.dq"), "float32", shape, (tag,))
        before.append(Node("DequantizeLinear", (q_name, s_name), (out,),
                           {"axis": layer.channel_axis}, name=f"{layer.weight}.dequant",
                           annotations=(tag,)))
        if precision.act_bits == 8:
            return out.name
        half = Value(self.fresh(f"{layer.weight}.dq16"), self.half, shape, (tag,))
        before.append(Node("Cast", (out.name,), (half,), {"to": self.half_to},
                           name=f"{layer.weight}.cast"))
        return half.name

    def _divisors(self, layer: Layer) -> np.ndarray | None:
        """The smoothing divisors of the layer's activation if its weight takes them."""
        divisors = self.smoothing.get(layer.activation)
        if divisors is None or not takes_smoothing(self.graph, layer, divisors.size):
            return None
        return divisors

    def _half_param(self, name: str) -> str:
        """The param rounded to the 16-bit float type (round to nearest even)."""
        key = (name, f"{self.half_suffix}-param")
        if key not in self.shared:
            half = self.fresh(f"{name}.{self.half_suffix}")
            self.params[half] = np.asarray(self.graph.params[name], dtype=np.float32).astype(
                half_numpy_dtype(self.half))
            self.shared[key] = half
        return self.shared[key]

    def _cast_shared(self, name: str, before: list[Node]) -> str:
        key = (name, f"cast{self.half_to}")
        if key not in self.shared:
            value = self.graph.value(name)
            out = Value(self.fresh(f"{name}.{self.half_suffix}"), self.half, value.shape)
            before.append(Node("Cast", (name,), (out,), {"to": self.half_to},
                               name=f"{name}.cast"))
            self.shared[key] = out.name
        return self.shared[key]

    def _bf16_values(self, name: str, before: list[Node]) -> str:
        """``name`` rounded to bfloat16 and read back as float32 (shared by the layers
        reading it), tagged as a 16-bit activation for the roofline."""
        key = (name, "bf16-values")
        if key not in self.shared:
            half = self._cast_shared(name, before)
            value = self.graph.value(name)
            out = Value(self.fresh(f"{name}.bf16v"), "float32", value.shape,
                        (Precision(16, "bfloat"),))
            before.append(Node("Cast", (half,), (out,), {"to": onnx.TensorProto.FLOAT},
                               name=f"{name}.bf16v"))
            self.shared[key] = out.name
        return self.shared[key]

    def _widened_weight(self, name: str, shape: tuple[int, ...], tag: Precision,
                        before: list[Node]) -> str:
        """The bfloat16 weight ``name`` (of the layer's weight ``shape``) read as float32
        (folded at compile time), tagged with the weight's precision (its bytes)."""
        key = (name, "bf16-widened")
        if key not in self.shared:
            out = Value(self.fresh(f"{name}.f32"), "float32", shape, (tag,))
            before.append(Node("Cast", (name,), (out,), {"to": onnx.TensorProto.FLOAT},
                               name=f"{name}.widen"))
            self.shared[key] = out.name
        return self.shared[key]

    def _quantized_activation(self, layer: Layer, before: list[Node]) -> str:
        name = layer.activation
        key = (name, "qdq8")
        if key in self.shared:
            return self.shared[key]
        if name not in self.ranges:
            raise KeyError(f"no calibration range for activation {name!r}")
        scale, zero = activation_qparams(*self.ranges[name])
        s_name, z_name = self.fresh(f"{name}.scale"), self.fresh(f"{name}.zero")
        self.params[s_name], self.params[z_name] = scale, zero
        value = self.graph.value(name)
        source = name
        if self._divisors(layer) is not None:
            inverse = self.fresh(f"{name}.inv_m")
            self.params[inverse] = (1.0 / self.smoothing[name]).astype(np.float32)
            smoothed = Value(self.fresh(f"{name}.smoothed"), "float32", value.shape)
            before.append(Node("Mul", (name, inverse), (smoothed,), name=f"{name}.smooth"))
            source = smoothed.name
        q = Value(self.fresh(f"{name}.q"), "uint8", value.shape)
        dq = Value(self.fresh(f"{name}.dq"), "float32", value.shape,
                   (Precision(8, "int"),))
        before.append(Node("QuantizeLinear", (source, s_name, z_name), (q,),
                           name=f"{name}.quant"))
        before.append(Node("DequantizeLinear", (q.name, s_name, z_name), (dq,),
                           name=f"{name}.dequant", annotations=(Precision(8, "int"),)))
        self.shared[key] = dq.name
        return dq.name


def _grouped(nodes: list[Node], group: FusionGroup) -> list[Node]:
    """The conversions join the layer's kernel (a shared one joins the first layer's)."""
    return [n if any(isinstance(a, FusionGroup) for a in n.annotations)
            else n.replace(annotations=(*n.annotations, group)) for n in nodes]
