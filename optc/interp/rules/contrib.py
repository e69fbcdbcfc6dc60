"""onnxruntime contrib ops (domain ``com.microsoft``) that optc's ``fuse`` pass emits.

The kernel fusion pass replaces decomposed subgraphs by one op that both onnxruntime
and TVM's Relax ONNX importer know: ``Gelu``, ``FastGelu``, ``BiasGelu`` and the
self-``Attention`` of BERT-style encoders. Semantics follow onnxruntime's
``docs/ContribOperators.md``; only what the importers also accept is supported
(no past state, no rotary embedding), and anything else fails naming the node.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from optc.interp.context import Rule, RuleCall

CONTRIB_DOMAIN = "com.microsoft"
MASK_FILTER_VALUE = -10000.0
"""onnxruntime's default additive value for key positions a ``mask_index`` masks out."""
_TANH_C1 = math.sqrt(2.0 / math.pi)
_TANH_C2 = 0.044715


def _gelu(call: RuleCall) -> list[torch.Tensor]:
    return [F.gelu(call.x(0))]


def _bias_gelu(call: RuleCall) -> list[torch.Tensor]:
    return [F.gelu(call.x(0) + call.x(1))]


def _fast_gelu(call: RuleCall) -> list[torch.Tensor]:
    # onnxruntime's FastGelu is the tanh approximation of GELU, bias added first if given.
    x = call.x(0)
    bias = call.input(1)
    if bias is not None:
        x = x + bias
    return [0.5 * x * (1.0 + torch.tanh(_TANH_C1 * (x + _TANH_C2 * x * x * x)))]


def _attention(call: RuleCall) -> list[torch.Tensor | None]:
    """Multi-head self-attention with packed QKV weights (onnxruntime ``Attention``)."""
    for index, what in ((4, "past state"), (6, "past_sequence_length")):
        if call.input(index) is not None:
            raise call.fail(f"{what} is not supported")
    if call.wants(1):
        raise call.fail("the 'present' output (past state) is not supported")
    if call.attr("do_rotary", 0):
        raise call.fail("rotary embeddings are not supported")
    x, weight = call.x(0), call.x(1)
    heads = int(call.attr("num_heads", 0))
    sizes = call.attr("qkv_hidden_sizes")
    q_size, k_size, v_size = (int(s) for s in sizes) if sizes else (weight.shape[1] // 3,) * 3
    if heads <= 0 or q_size % heads or v_size % heads or q_size != k_size:
        raise call.fail(f"num_heads={heads} does not divide the hidden sizes "
                        f"{(q_size, k_size, v_size)}")
    qkv = x @ weight
    bias = call.input(2)
    if bias is not None:
        qkv = qkv + bias
    q, k, v = torch.split(qkv, [q_size, k_size, v_size], dim=-1)
    q, k, v = (_heads(t, heads) for t in (q, k, v))  # (B, H, S, D)
    scale = call.attr("scale")
    scale = float(scale) if scale else 1.0 / math.sqrt(q_size // heads)
    scores = (q @ k.transpose(-1, -2)) * scale
    scores = scores + _mask_bias(call, scores)
    if call.attr("unidirectional", 0):
        seq = scores.shape[-1]
        causal = torch.ones(seq, seq, dtype=torch.bool, device=scores.device).triu(1)
        scores = scores.masked_fill(causal, float("-inf"))
    out = torch.softmax(scores, dim=-1) @ v  # (B, H, S, Dv)
    batch, _, seq, _ = out.shape
    return [out.transpose(1, 2).reshape(batch, seq, v_size), None]


def _heads(t: torch.Tensor, heads: int) -> torch.Tensor:
    batch, seq, size = t.shape
    return t.reshape(batch, seq, heads, size // heads).transpose(1, 2)


def _mask_bias(call: RuleCall, scores: torch.Tensor) -> torch.Tensor | float:
    """The additive bias of ``mask_index`` (2-D key mask or 3-D) and ``attention_bias``."""
    total: torch.Tensor | float = 0.0
    mask = call.input(3)
    if mask is not None:
        fill = float(call.attr("mask_filter_value", MASK_FILTER_VALUE))
        if mask.dim() == 2:    # (B, T): 1 keeps a key, 0 masks it
            mask = mask[:, None, None, :]
        elif mask.dim() == 3:  # (B, S, T)
            mask = mask[:, None, :, :]
        else:
            raise call.fail(f"mask_index of rank {mask.dim()} is not supported")
        total = (1.0 - mask.to(scores.dtype)) * fill
    extra = call.input(5)
    if extra is not None:
        total = total + extra.to(scores.dtype)
    return total


RULES: dict[str, Rule] = {
    "Gelu": _gelu,
    "BiasGelu": _bias_gelu,
    "FastGelu": _fast_gelu,
    "Attention": _attention,
}
"""op type -> rule, for ops of the ``com.microsoft`` domain."""
