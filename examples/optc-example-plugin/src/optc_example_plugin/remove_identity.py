"""remove-identity: drop Identity and inference-mode Dropout nodes, rewiring their readers."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from optc.ir.graph import Graph, Node, Value
from optc.pipeline import Pass, PassContext

LEGACY_IS_TEST_OPSET = 7  # before opset 7, Dropout trained unless is_test=1


@dataclasses.dataclass(frozen=True)
class RemoveIdentity(Pass):
    """Remove Identity nodes and Dropout nodes that run in inference mode.

    Exact: both ops return their input unchanged at inference.

    Ordering: none. Follow with ``eliminate-dead-code`` to drop a Dropout's
    ``ratio``/``training_mode`` params if nothing else reads them.

    Readers of ``y = Identity(x)`` read ``x`` instead. When ``y`` is a graph output its
    name is kept: the node producing ``x`` is renamed to produce ``y`` (so the graph's
    interface never changes); if ``x`` is itself a graph input, param or graph output,
    that Identity stays. A Dropout is removed only when its mask output is unused and
    it is in inference mode (no ``training_mode`` input or a false constant one;
    ``is_test=1`` before opset 7). Control-flow bodies are left as they are, but
    captures of a renamed value inside them are rewired.

    Options:
        dropout: also remove inference-mode Dropout nodes (default true).

    Before -> after::

        %a = Conv(%x, %w)
        %b = Identity(%a)
        %y = Dropout(%b) {ratio=0.5}
        output %y
      ->
        %y = Conv(%x, %w)
        output %y
    """

    name: ClassVar[str] = "remove-identity"
    exact: ClassVar[bool] = True

    dropout: bool = dataclasses.field(default=True, metadata={
        "help": "also remove Dropout nodes that run in inference mode"})

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        opset = int(graph.opsets.get("", graph.opsets.get("ai.onnx", 0)) or 0)
        alias: dict[str, str] = {}      # read of key -> read of value
        renamed: dict[str, str] = {}    # node output key becomes value
        outputs = set(graph.output_names)
        interface = outputs | set(graph.input_names) | set(graph.params)
        kept: list[Node] = []
        for node in graph.nodes:
            if not self._removable(node, graph, opset):
                kept.append(node)
                continue
            source, target = _resolve(alias, node.inputs[0]), node.outputs[0].name
            if target not in outputs:
                alias[target] = source
            elif source not in interface and source not in renamed:
                renamed[source] = target
                alias[source] = target
            else:
                kept.append(node)
        if len(kept) == len(graph.nodes):
            return graph
        nodes = tuple(_rewire(node, alias, renamed) for node in kept)
        ctx.logger.debug("remove-identity: removed %d nodes", len(graph.nodes) - len(kept))
        return graph.replace(nodes=nodes)

    def _removable(self, node: Node, graph: Graph, opset: int) -> bool:
        if node.domain not in ("", "ai.onnx") or not node.inputs or not node.inputs[0]:
            return False
        if node.op == "Identity":
            return len(node.outputs) == 1
        if node.op != "Dropout" or not self.dropout:
            return False
        if opset < LEGACY_IS_TEST_OPSET and int(node.attr("is_test", 0)) != 1:
            return False
        mask = node.outputs[1].name if len(node.outputs) > 1 else ""
        if mask and (graph.consumers(mask) or mask in graph.output_names):
            return False
        return _inference_mode(node, graph.params)


def _inference_mode(node: Node, params: Mapping[str, np.ndarray]) -> bool:
    training = node.inputs[2] if len(node.inputs) > 2 else ""
    if not training:
        return True
    return training in params and not bool(np.asarray(params[training]).reshape(-1)[0])


def _resolve(alias: Mapping[str, str], name: str) -> str:
    while name in alias:
        name = alias[name]
    return name


def _rewire(node: Node, alias: Mapping[str, str], renamed: Mapping[str, str]) -> Node:
    inputs = tuple(_resolve(alias, n) if n else n for n in node.inputs)
    outputs = tuple(dataclasses.replace(v, name=renamed[v.name]) if v.name in renamed else v
                    for v in node.outputs)
    attrs = {key: _rewire_attr(value, alias) for key, value in node.attrs.items()}
    return node.replace(inputs=inputs, outputs=outputs, attrs=attrs)


def _rewire_attr(value: Any, alias: Mapping[str, str]) -> Any:
    if isinstance(value, Graph):
        return _rewire_body(value, alias)
    if isinstance(value, tuple) and value and isinstance(value[0], Graph):
        return tuple(_rewire_body(body, alias) for body in value)
    return value


def _rewire_body(body: Graph, alias: Mapping[str, str]) -> Graph:
    """Rewire a control-flow body's captures; names the body defines itself are kept."""
    local = set(body.input_names) | set(body.params) | {
        out.name for node in body.nodes for out in node.outputs}
    outer = {k: v for k, v in alias.items() if k not in local}
    if not outer:
        return body
    nodes = tuple(_rewire(node, outer, {}) for node in body.nodes)
    outputs = tuple(_rewire_output(v, outer) for v in body.outputs)
    return body.replace(nodes=nodes, outputs=outputs)


def _rewire_output(value: Value, alias: Mapping[str, str]) -> Value:
    name = _resolve(alias, value.name)
    return value if name == value.name else dataclasses.replace(value, name=name)
