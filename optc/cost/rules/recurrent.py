"""Recurrent layers (RNN, GRU, LSTM) and random generators.

A recurrent layer does, per time step and direction, two matrix products (input and
recurrent weights) for every gate and a few element-wise gate operations. It is
priced as one kernel over the whole sequence; the steps are sequential, so a short
sequence of small steps is faster on paper than in practice.
"""

from __future__ import annotations

from optc.cost.work import NodeView, Work

_GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}
# per hidden unit and step: (element-wise operations, transcendentals) of the gates
_CELL = {"RNN": (2, 1), "GRU": (9, 3), "LSTM": (10, 5)}


def recurrent(view: NodeView) -> Work:
    op = view.node.op
    x = view.in_shape(0)  # [seq, batch, input] (layout 0) or [batch, seq, input]
    directions, gate_rows, input_size = view.in_shape(1)  # W: [dirs, gates*hidden, input]
    hidden = gate_rows // _GATES[op]
    seq, batch = (x[1], x[0]) if int(view.node.attr("layout", 0)) else (x[0], x[1])
    steps = seq * directions * batch
    macs = steps * gate_rows * (input_size + hidden)
    bias = steps * 2 * gate_rows if view.has_input(3) else 0
    ops, transcendentals = _CELL[op]
    return view.work(2 * macs + bias + ops * steps * hidden,
                     transcendentals * steps * hidden, op_class="matmul")


def random(view: NodeView) -> Work:
    """Counter-based uniform bits (about 10 integer ops); normal adds Box-Muller
    (a log, a root, a cosine); Bernoulli compares a uniform with each probability."""
    outputs = view.out_numel(0)
    normal = view.node.op.startswith("RandomNormal")
    reads = view.reads([view.input(0)]) if view.node.op == "Bernoulli" else ()
    return view.work((10 + (3 if normal else 1)) * outputs, (3 if normal else 0) * outputs,
                     op_class="elementwise", reads=reads)


RANDOM = ("RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Bernoulli")
"""Ops whose result differs on every run: never folded into a constant."""

RULES = {**dict.fromkeys(_GATES, recurrent), **dict.fromkeys(RANDOM, random)}
