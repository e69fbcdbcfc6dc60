"""Replace matched subgraphs by their fused nodes, and drop the params left unread."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from optc.fusion.attention import AttentionMatch
from optc.fusion.view import GraphView
from optc.interp.rules.contrib import CONTRIB_DOMAIN
from optc.ir.graph import Graph, Node, Value, node_reads

Replacement = tuple[tuple[Node, ...], tuple[Node, ...], dict[str, np.ndarray]]
"""(nodes removed, nodes put where the last removed one stood, new params)."""


def attention_nodes(view: GraphView, match: AttentionMatch) -> Replacement:
    """One contrib ``Attention`` (plus the NaN guard the model had, if any)."""
    last = match.nodes[-1]
    out = last.outputs[0]
    weights = [view.constant(p.weight) for p in (match.q, match.k, match.v)]
    biases = [view.constant(p.bias) if p.bias else np.zeros(w.shape[1], w.dtype)  # type: ignore
              for p, w in zip((match.q, match.k, match.v), weights, strict=True)]
    base = last.name or out.name
    params = {view.fresh(f"{match.q.weight}.qkv"): np.concatenate(weights, axis=1),
              view.fresh(f"{match.q.bias or match.q.weight}.qkv_bias"): np.concatenate(biases)}
    weight_name, bias_name = params
    inputs: tuple[str, ...] = (match.x, weight_name, bias_name)
    nodes: list[Node] = []
    if match.mask is not None:
        inputs += ("", "", _full_mask(view, match, params, nodes, base))
    result = out if match.guard_zero is None else Value(view.fresh(f"{out.name}.attn"),
                                                        out.dtype, out.shape)
    nodes.append(Node("Attention", inputs, (result,), {"num_heads": match.heads},
                      domain=CONTRIB_DOMAIN, name=f"{base}/attention"))
    if match.guard_zero is not None:
        # The exporters zero a softmax row that is NaN (every key masked with -inf); the
        # same rows come out NaN from the fused op, so zeroing NaN outputs is the same.
        isnan = Value(view.fresh(f"{out.name}.isnan"), "bool", out.shape)
        nodes.append(Node("IsNaN", (result.name,), (isnan,), name=f"{base}/isnan"))
        nodes.append(Node("Where", (isnan.name, match.guard_zero, result.name), (out,),
                          name=f"{base}/nan_guard"))
    return match.nodes, tuple(nodes), params


def _full_mask(view: GraphView, match: AttentionMatch, params: dict[str, np.ndarray],
               nodes: list[Node], base: str) -> str:
    """The mask as onnxruntime's ``attention_bias`` wants it: [B|1, H|1, S, S]."""
    seq = view.shape(match.x)[1]  # type: ignore[index]
    shape = view.shape(match.mask)  # type: ignore[arg-type]
    if shape is not None and len(shape) == 4 and shape[2:] == (seq, seq):
        return match.mask  # type: ignore[return-value]
    target = view.fresh(f"{base}.mask_shape")
    params[target] = np.array([1, 1, seq, seq], dtype=np.int64)
    # Expand broadcasts exactly as the Add it replaces did against [B, H, S, S].
    full = np.broadcast_shapes(shape, (1, 1, seq, seq)) if shape is not None else (
        None, None, seq, seq)
    expanded = Value(view.fresh(f"{match.mask}.expanded"), view.dtype(match.mask),  # type: ignore
                     tuple(full))
    nodes.append(Node("Expand", (match.mask, target), (expanded,),  # type: ignore[arg-type]
                      name=f"{base}/expand_mask"))
    return expanded.name


def apply(graph: Graph, replacements: Sequence[Replacement]) -> Graph:
    """``graph`` with every replacement made; params only the removed nodes read go."""
    if not replacements:
        return graph
    removed = {id(node) for old, _, _ in replacements for node in old}
    at_last = {id(old[-1]): new for old, new, _ in replacements}
    nodes: list[Node] = []
    for node in graph.nodes:
        if id(node) in at_last:
            nodes.extend(at_last[id(node)])
        elif id(node) not in removed:
            nodes.append(node)
    params = dict(graph.params)
    for _, _, new_params in replacements:
        params.update(new_params)
    stale = {name for old, _, _ in replacements for node in old for name in node.inputs
             if name in graph.params}
    read = {name for node in nodes for name in node_reads(node)} | set(graph.output_names)
    params = {k: v for k, v in params.items() if k not in stale or k in read}
    return graph.replace(nodes=tuple(nodes), params=params)
