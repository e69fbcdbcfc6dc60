"""Cost models: what running a graph on a target costs, predicted before compiling it.

``Cost`` / ``NodeCost`` / ``Breakdown`` are the records; ``CostModel`` the protocol;
``RooflineModel`` the per-op roofline; ``optc.cost.calibration`` measures the host.
"""

from optc.cost.model import CostModel, cost_models, get_cost_model
from optc.cost.record import Breakdown, Cost, NodeCost
from optc.cost.roofline import RooflineModel

__all__ = ["Breakdown", "Cost", "CostModel", "NodeCost", "RooflineModel", "cost_models",
           "get_cost_model"]
