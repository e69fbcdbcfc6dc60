"""Reference execution of the IR on torch: a loop over nodes and a per-op rule table.

Differentiable by construction (rules are torch ops), so calibration, Hessian
estimates and fine-tuning run through it. Float math is float32, like onnxruntime.
"""

from optc.interp.context import Rule, RuleCall
from optc.interp.run import needed_nodes, run, run_numpy
from optc.interp.table import evaluate_node, graph_opset, has_rule, supported_ops

__all__ = [
    "Rule", "RuleCall", "evaluate_node", "graph_opset", "has_rule", "needed_nodes", "run",
    "run_numpy", "supported_ops",
]
