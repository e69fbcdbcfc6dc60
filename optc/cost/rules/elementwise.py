"""Element-wise ops: arithmetic, comparisons, logic, math functions and activations.

Each output element costs a fixed number of arithmetic operations and transcendental
evaluations (exp, log, tanh, erf, sqrt, trigonometric: priced per target by the
model, since a CPU runs a polynomial where a GPU has special-function units).
Broadcast inputs are read once at their own size.
"""

from __future__ import annotations

import math

from optc.cost.work import NodeView, Work

# op -> (arithmetic operations, transcendental evaluations) per output element
PER_ELEMENT: dict[str, tuple[float, float]] = {
    # arithmetic (binary); Pow is exp(y * log(x))
    "Add": (1, 0), "Sub": (1, 0), "Mul": (1, 0), "Div": (1, 0), "Mod": (2, 0),
    "BitShift": (1, 0), "Pow": (1, 2), "PRelu": (2, 0),
    # comparisons and logic
    "Equal": (1, 0), "Greater": (1, 0), "GreaterOrEqual": (1, 0), "Less": (1, 0),
    "LessOrEqual": (1, 0), "And": (1, 0), "Or": (1, 0), "Xor": (1, 0), "Not": (1, 0),
    "BitwiseAnd": (1, 0), "BitwiseOr": (1, 0), "BitwiseXor": (1, 0), "BitwiseNot": (1, 0),
    "Where": (1, 0), "IsInf": (1, 0), "IsNaN": (1, 0),
    # unary arithmetic
    "Abs": (1, 0), "Neg": (1, 0), "Ceil": (1, 0), "Floor": (1, 0), "Round": (1, 0),
    "Sign": (1, 0), "Reciprocal": (1, 0),
    # unary transcendental
    "Exp": (0, 1), "Log": (0, 1), "Sqrt": (0, 1), "Erf": (0, 1), "Sin": (0, 1), "Cos": (0, 1),
    "Tan": (0, 1), "Asin": (0, 1), "Acos": (0, 1), "Atan": (0, 1), "Sinh": (0, 1),
    "Cosh": (0, 1), "Asinh": (0, 1), "Acosh": (0, 1), "Atanh": (0, 1), "Tanh": (0, 1),
    # activations
    "Relu": (1, 0), "LeakyRelu": (2, 0), "ThresholdedRelu": (2, 0), "Clip": (2, 0),
    "Shrink": (3, 0), "HardSigmoid": (4, 0), "HardSwish": (5, 0), "Softsign": (3, 0),
    "Sigmoid": (2, 1),          # 1 / (1 + exp(-x))
    "Elu": (3, 1), "Celu": (4, 1), "Selu": (4, 1),
    "Softplus": (1, 2),         # log(1 + exp(x))
    "Mish": (2, 3),             # x * tanh(softplus(x))
    "Swish": (3, 1),            # x * sigmoid(alpha * x)
}

_GELU_ERF = (4, 1)   # 0.5 * x * (1 + erf(x / sqrt(2)))
_GELU_TANH = (7, 1)  # 0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3)))


def per_element(view: NodeView, ops: float, transcendentals: float) -> Work:
    outputs = view.out_numel(0)
    return view.work(ops * outputs, transcendentals * outputs)


def table_rule(view: NodeView) -> Work:
    return per_element(view, *PER_ELEMENT[view.node.op])


def variadic(view: NodeView) -> Work:
    """Sum / Max / Min / Mean of n inputs: n - 1 operations per element (Mean: n)."""
    count = sum(1 for name in view.node.inputs if name)
    ops = count - 1 + (1 if view.node.op == "Mean" else 0)
    return per_element(view, max(ops, 0), 0)


def gelu(view: NodeView) -> Work:
    tanh = str(view.node.attr("approximate", "none")) == "tanh"
    return per_element(view, *(_GELU_TANH if tanh else _GELU_ERF))


def det(view: NodeView) -> Work:
    """LU factorization per matrix: 2/3 n^3 operations, n the matrix size."""
    shape = view.in_shape(0)
    n = shape[-1]
    return view.work(2 / 3 * n**3 * math.prod(shape[:-2]), op_class="matmul")


RULES = {
    **dict.fromkeys(PER_ELEMENT, table_rule),
    **dict.fromkeys(("Sum", "Max", "Min", "Mean"), variadic),
    "Gelu": gelu, "Det": det,
}
