"""The ``CostModel`` protocol and the registry of cost models (entry points included)."""

from __future__ import annotations

from typing import Any, ClassVar, Protocol, runtime_checkable

from optc.cost.record import Breakdown, Cost
from optc.errors import PluginError, UnknownNameError
from optc.ir.graph import Graph
from optc.plugins import OWN_DISTRIBUTION, load_group
from optc.target import Target

ENTRY_POINT_GROUP = "optc.cost_models"


@runtime_checkable
class CostModel(Protocol):
    """Predicts what running a graph once on a target costs.

    ``uuid()`` identifies the model and its parameters, for caches keyed together
    with ``Graph.structural_hash()`` and ``Target.digest()``.
    """

    name: ClassVar[str]

    def estimate(self, graph: Graph, target: Target) -> Cost: ...

    def breakdown(self, graph: Graph, target: Target) -> Breakdown: ...

    def uuid(self) -> str: ...


def builtin_cost_models() -> dict[str, type]:
    from optc.cost.learned import LearnedLatencyModel
    from optc.cost.roofline import RooflineModel

    return {RooflineModel.name: RooflineModel, LearnedLatencyModel.name: LearnedLatencyModel}


def cost_models() -> dict[str, type]:
    """Every cost model class by name: optc's own and those of ``optc.cost_models`` plugins."""
    models = builtin_cost_models()
    for plugin in load_group(ENTRY_POINT_GROUP).values():
        known = models.get(plugin.name)
        if known is not None and known is not plugin.obj:
            if plugin.distribution == OWN_DISTRIBUTION:
                continue
            raise PluginError(f"{ENTRY_POINT_GROUP} name {plugin.name!r} is registered twice: "
                              f"by {OWN_DISTRIBUTION} and by {plugin.distribution}")
        models[plugin.name] = plugin.obj
    return models


def get_cost_model(name: str = "roofline", **params: Any) -> CostModel:
    """An instance of the cost model called ``name`` with ``params``."""
    models = cost_models()
    if name not in models:
        raise UnknownNameError(f"unknown cost model {name!r} (known: {', '.join(models)})")
    model = models[name](**params)
    if not isinstance(model, CostModel):
        raise PluginError(f"cost model {name!r} does not implement estimate/breakdown/uuid")
    return model
