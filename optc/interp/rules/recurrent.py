"""Recurrent layers: RNN, GRU and LSTM (any direction, sequence_lens, layout, clip).

A plain loop over time steps; shorter sequences (``sequence_lens``) keep their state
and emit zeros past their end, and a reverse direction starts at each sequence's own
last element, as ONNX specifies.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F

from optc.interp.context import Rule, RuleCall

Activation = Callable[[torch.Tensor], torch.Tensor]
Cell = Callable[..., tuple[torch.Tensor, torch.Tensor | None]]

_GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}
_DEFAULTS = {"RNN": ("Tanh",), "GRU": ("Sigmoid", "Tanh"), "LSTM": ("Sigmoid", "Tanh", "Tanh")}
# name: (default alpha, default beta, function); None when the function takes neither.
_ACTIVATIONS: dict[str, tuple[float | None, float | None, Callable[..., torch.Tensor]]] = {
    "Relu": (None, None, lambda x, a, b: torch.relu(x)),
    "Tanh": (None, None, lambda x, a, b: torch.tanh(x)),
    "Sigmoid": (None, None, lambda x, a, b: torch.sigmoid(x)),
    "Softsign": (None, None, lambda x, a, b: F.softsign(x)),
    "Softplus": (None, None, lambda x, a, b: F.softplus(x)),
    "Affine": (1.0, 0.0, lambda x, a, b: a * x + b),
    "LeakyRelu": (0.01, None, lambda x, a, b: F.leaky_relu(x, a)),
    "ThresholdedRelu": (1.0, None, lambda x, a, b: torch.where(x > a, x, 0.0)),
    "ScaledTanh": (1.0, 1.0, lambda x, a, b: a * torch.tanh(b * x)),
    "HardSigmoid": (0.2, 0.5, lambda x, a, b: torch.clamp(a * x + b, 0.0, 1.0)),
    "Elu": (1.0, None, lambda x, a, b: F.elu(x, a)),
}


def _activations(call: RuleCall, directions: int) -> list[list[Activation]]:
    """Per direction, the activation functions (f, g, h) with their alpha/beta."""
    names = list(call.attr("activations") or _DEFAULTS[call.node.op] * directions)
    alphas = iter(call.attr("activation_alpha") or ())
    betas = iter(call.attr("activation_beta") or ())
    funcs: list[Activation] = []
    for name in names:
        alpha, beta, fn = _ACTIVATIONS[_canonical(name)]
        # Listed alphas and betas go, in order, to the functions that take them.
        a = next(alphas, alpha) if alpha is not None else None
        b = next(betas, beta) if beta is not None else None
        funcs.append(lambda x, fn=fn, a=a, b=b: fn(x, a, b))
    per = len(funcs) // directions
    return [funcs[d * per:(d + 1) * per] for d in range(directions)]


def _canonical(name: str) -> str:
    return next((k for k in _ACTIVATIONS if k.lower() == name.lower()), name)


def _recurrent(call: RuleCall) -> list[torch.Tensor | None]:
    op = call.node.op
    x, w, r = call.x(0), call.x(1), call.x(2)
    batch_first = bool(call.attr("layout", 0))
    if batch_first:
        x = x.transpose(0, 1)
    seq, batch = x.shape[0], x.shape[1]
    directions, hidden = w.shape[0], r.shape[-1]
    bias = call.input(3)
    lengths = call.input(4)
    lengths = torch.full((batch,), seq) if lengths is None else lengths.to(torch.int64)
    h0 = call.input(5)
    c0 = call.input(6) if op == "LSTM" else None
    peep = call.input(7) if op == "LSTM" else None
    funcs = _activations(call, directions)
    outputs, last_h, last_c = [], [], []
    reverse = call.attr("direction", "forward") == "reverse"
    for d in range(directions):
        zeros = x.new_zeros(batch, hidden)
        state = (zeros if h0 is None else h0[d], zeros if c0 is None else c0[d])
        b = None if bias is None else bias[d]
        cell = _cell(call, w[d], r[d], b, None if peep is None else peep[d], funcs[d])
        ys, state = _sweep(cell, x, lengths, state, reverse=reverse or d == 1)
        outputs.append(ys)
        last_h.append(state[0])
        last_c.append(state[1])
    y = torch.stack(outputs, dim=1)  # (seq, directions, batch, hidden)
    y_h, y_c = torch.stack(last_h), torch.stack(last_c)
    if batch_first:
        y, y_h, y_c = y.permute(2, 0, 1, 3), y_h.transpose(0, 1), y_c.transpose(0, 1)
    return [y, y_h, y_c if op == "LSTM" else None][: call.n_outputs]


def _sweep(cell: Cell, x: torch.Tensor, lengths: torch.Tensor,
           state: tuple[torch.Tensor, torch.Tensor], reverse: bool,
           ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    ys: list[torch.Tensor] = [x.new_zeros(0)] * x.shape[0]
    for t in _steps(x.shape[0], reverse):
        active = (t < lengths).unsqueeze(1)
        h, c = cell(x[t], *state)
        state = (torch.where(active, h, state[0]),
                 state[1] if c is None else torch.where(active, c, state[1]))
        ys[t] = torch.where(active, h, torch.zeros_like(h))
    return torch.stack(ys), state


def _steps(seq: int, reverse: bool) -> Iterator[int]:
    return reversed(range(seq)) if reverse else iter(range(seq))


def _cell(call: RuleCall, w: torch.Tensor, r: torch.Tensor, b: torch.Tensor | None,
          peep: torch.Tensor | None, funcs: list[Activation]) -> Cell:
    gates = _GATES[call.node.op]
    wb, rb = (None, None) if b is None else (b[: gates * r.shape[-1]], b[gates * r.shape[-1]:])
    clip = call.attr("clip")

    def pre(x: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        xw, hr = x @ w.t(), h @ r.t()
        if wb is not None:
            xw, hr = xw + wb, hr + rb
        return xw, hr

    def clipped(t: torch.Tensor) -> torch.Tensor:
        return t if clip is None else torch.clamp(t, -float(clip), float(clip))

    def rnn(x: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, None]:
        xw, hr = pre(x, h)
        return funcs[0](clipped(xw + hr)), None

    def gru(x: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, None]:
        xw, hr = pre(x, h)
        xz, xr, xh = xw.chunk(3, dim=-1)
        hz, hrr, hh = hr.chunk(3, dim=-1)
        z, reset = funcs[0](clipped(xz + hz)), funcs[0](clipped(xr + hrr))
        if call.attr("linear_before_reset", 0):
            candidate = funcs[1](clipped(xh + reset * hh))
        else:
            rh = (reset * h) @ r.t()[:, 2 * h.shape[-1]:]
            candidate = funcs[1](clipped(xh + rh + (0 if rb is None else rb[2 * h.shape[-1]:])))
        return (1 - z) * candidate + z * h, None

    def lstm(x: torch.Tensor, h: torch.Tensor, c: torch.Tensor,
             ) -> tuple[torch.Tensor, torch.Tensor]:
        xw, hr = pre(x, h)
        i, o, f, g = (xw + hr).chunk(4, dim=-1)
        pi, po, pf = (None, None, None) if peep is None else peep.chunk(3)
        i = funcs[0](clipped(i if pi is None else i + pi * c))
        f = 1 - i if call.attr("input_forget", 0) else \
            funcs[0](clipped(f if pf is None else f + pf * c))
        c_new = f * c + i * funcs[1](clipped(g))
        o = funcs[0](clipped(o if po is None else o + po * c_new))
        return o * funcs[2](c_new), c_new

    return {"RNN": rnn, "GRU": gru, "LSTM": lstm}[call.node.op]


RULES: dict[str, Rule] = {op: _recurrent for op in _GATES}
