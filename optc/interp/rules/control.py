"""Control flow: If and Loop, whose bodies run through the interpreter itself."""

from __future__ import annotations

import torch

from optc.interp.context import Rule, RuleCall, SubgraphRunner
from optc.ir.graph import Graph


def _runner(call: RuleCall) -> SubgraphRunner:
    if call.run_subgraph is None:
        raise call.fail("control flow needs the enclosing graph's values; use optc.interp.run")
    return call.run_subgraph


def _if(call: RuleCall) -> list[torch.Tensor]:
    branch: Graph = call.attr("then_branch") if bool(call.x(0).reshape(-1)[0].item()) \
        else call.attr("else_branch")
    return _runner(call)(branch, {})


def _loop(call: RuleCall) -> list[torch.Tensor]:
    body: Graph = call.attr("body")
    run_body = _runner(call)
    trip_limit = call.input(0)
    condition = call.input(1)
    carried = [t for t in call.inputs[2:] if t is not None]
    limit = None if trip_limit is None else int(trip_limit.item())
    keep_going = True if condition is None else bool(condition.item())
    names = body.input_names
    scans: list[list[torch.Tensor]] = []
    step = 0
    while keep_going and (limit is None or step < limit):
        feeds = {names[0]: torch.tensor(step, dtype=torch.int64),
                 names[1]: torch.tensor(keep_going)}
        feeds.update(zip(names[2:], carried, strict=True))
        outputs = run_body(body, feeds)
        keep_going = bool(outputs[0].item())
        carried = outputs[1:1 + len(carried)]
        extra = outputs[1 + len(carried):]
        scans = scans or [[] for _ in extra]
        for bucket, value in zip(scans, extra, strict=True):
            bucket.append(value)
        step += 1
    n_scans = call.n_outputs - len(carried)
    stacked = [torch.stack(bucket) for bucket in scans] if scans else \
        [torch.empty(0) for _ in range(n_scans)]
    return [*carried, *stacked]


RULES: dict[str, Rule] = {"If": _if, "Loop": _loop}
