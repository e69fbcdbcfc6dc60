"""The interpreter loop: bind feeds and params, evaluate nodes in order, free dead values.

Execution is plain eager torch, so autograd flows from any requested value back to
every float feed or parameter override that requires grad.
"""

from __future__ import annotations

import logging
from collections import ChainMap
from collections.abc import Mapping, MutableMapping, Sequence

import numpy as np
import torch

from optc.errors import UnknownNameError, UserInputError
from optc.interp.context import RuleCall, SubgraphRunner
from optc.interp.dtypes import dtype_name, to_numpy, to_tensor
from optc.interp.table import apply_rule, check_supported, graph_opset, rule_for
from optc.ir.graph import Graph, Node, Value, node_reads

log = logging.getLogger(__name__)

Feed = np.ndarray | torch.Tensor
Scope = MutableMapping[str, torch.Tensor]


def run(graph: Graph, feeds: Mapping[str, Feed], *,
        params: Mapping[str, torch.Tensor] | None = None,
        outputs: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
    """Evaluate ``graph`` on ``feeds``; return the ``outputs`` (default: graph outputs).

    ``params`` replaces graph params by name (e.g. tensors that require grad);
    ``outputs`` may name any value of the graph. Only the nodes those values depend
    on run, and every op among them is checked for a rule before anything runs.
    """
    wanted = list(graph.output_names if outputs is None else outputs)
    for name in wanted:
        if not graph.has_value(name):
            raise UnknownNameError(f"{name!r} is not a value of graph {graph.name!r}")
    nodes = needed_nodes(graph, wanted)
    check_supported(nodes)
    log.debug("interp: %d of %d nodes of %r compute %s", len(nodes), len(graph.nodes),
              graph.name, wanted)
    env, shared = _bind(graph, nodes, wanted, feeds, params or {})
    _execute(nodes, env, set(wanted), graph_opset(graph))
    return {name: _owned(env[name], shared) for name in wanted}


def run_numpy(graph: Graph, feeds: Mapping[str, Feed]) -> dict[str, np.ndarray]:
    """``run`` without autograd, returning numpy arrays."""
    with torch.no_grad():
        return {name: to_numpy(t) for name, t in run(graph, feeds).items()}


def run_subgraph(body: Graph, feeds: Mapping[str, torch.Tensor], outer: Scope,
                 opset: int) -> list[torch.Tensor]:
    """Run a control-flow body; names it does not define come from ``outer``."""
    local: dict[str, torch.Tensor] = {k: to_tensor(a) for k, a in body.params.items()}
    local.update(feeds)
    scope: Scope = ChainMap(local, outer)  # only ``local`` is ever written or freed
    _execute(body.nodes, scope, set(body.output_names), opset)
    return [scope[name] for name in body.output_names]


def needed_nodes(graph: Graph, wanted: Sequence[str]) -> list[Node]:
    """The nodes ``wanted`` depend on, in graph order."""
    pending = list(wanted)
    needed: set[int] = set()
    while pending:
        node = graph.producer(pending.pop())
        if node is None or id(node) in needed:
            continue
        needed.add(id(node))
        pending.extend(node_reads(node))
    return [node for node in graph.nodes if id(node) in needed]


def _bind(graph: Graph, nodes: list[Node], wanted: list[str], feeds: Mapping[str, Feed],
          overrides: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], set[int]]:
    """The initial values: params (overridden where asked) and the needed inputs.

    Also returns the storage addresses of graph-owned params, so outputs that alias
    them can be copied instead of handing out views of read-only memory.
    """
    unknown = sorted(set(overrides) - set(graph.params))
    if unknown:
        raise UnknownNameError(f"params {unknown} are not parameters of graph {graph.name!r}")
    extra = sorted(set(feeds) - set(graph.input_names))
    if extra:
        raise UnknownNameError(f"feeds {extra} are not inputs of graph {graph.name!r} "
                               f"(inputs: {list(graph.input_names)})")
    env: dict[str, torch.Tensor] = {}
    shared: set[int] = set()
    for name, array in graph.params.items():
        if name in overrides:
            env[name] = to_tensor(overrides[name])
        else:
            env[name] = to_tensor(array)
            shared.add(env[name].untyped_storage().data_ptr())
    read = {name for node in nodes for name in node_reads(node)} | set(wanted)
    for value in graph.inputs:
        if value.name in feeds:
            env[value.name] = _feed(value, feeds[value.name])
        elif value.name in read:
            raise UserInputError(f"input {value.name!r} of graph {graph.name!r} is not fed")
    return env, shared


def _feed(value: Value, data: Feed) -> torch.Tensor:
    """A feed as a tensor, checked against the input's declared dtype and static dims."""
    if not isinstance(data, torch.Tensor):
        data = np.array(data)  # a private copy: the caller keeps its array
    tensor = to_tensor(data)
    got = dtype_name(tensor.dtype)
    if value.dtype is not None and got != value.dtype:
        raise UserInputError(f"input {value.name!r} is {got}, the graph expects {value.dtype}")
    if value.shape is not None:
        dims_ok = len(value.shape) == tensor.dim() and all(
            not isinstance(d, int) or d == n for d, n in zip(value.shape, tensor.shape,
                                                             strict=True))
        if not dims_ok:
            raise UserInputError(f"input {value.name!r} has shape {tuple(tensor.shape)}, "
                                 f"the graph expects {value.shape}")
    return tensor


def _execute(nodes: Sequence[Node], scope: Scope, keep: set[str], opset: int) -> None:
    """Evaluate ``nodes`` into ``scope``, dropping local values after their last use."""
    last_use: dict[str, int] = {}
    for index, node in enumerate(nodes):
        for name in node_reads(node):
            last_use[name] = index
    local = scope.maps[0] if isinstance(scope, ChainMap) else scope
    runner = _runner_for(scope, opset)
    for index, node in enumerate(nodes):
        inputs = [scope[name] if name else None for name in node.inputs]
        call = RuleCall(node, inputs, opset, runner)
        for value, tensor in zip(node.outputs, apply_rule(rule_for(node), call), strict=True):
            if value.name and tensor is not None:
                scope[value.name] = tensor
        # Free what no later node reads (memory on deep CNNs such as DenseNet or VGG).
        for name in [*dict.fromkeys(node_reads(node)), *node.output_names]:
            if name in local and name not in keep and last_use.get(name, -1) <= index:
                del local[name]


def _runner_for(scope: Scope, opset: int) -> SubgraphRunner:
    def run_body(body: Graph, feeds: Mapping[str, torch.Tensor]) -> list[torch.Tensor]:
        return run_subgraph(body, feeds, scope, opset)

    return run_body


def _owned(tensor: torch.Tensor, shared: set[int]) -> torch.Tensor:
    """Copy a result that still shares memory with a (read-only) graph param."""
    if tensor.untyped_storage().data_ptr() in shared and tensor.numel():
        return tensor.clone()
    return tensor
