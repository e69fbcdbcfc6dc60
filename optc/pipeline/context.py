"""``PassContext``: what a pass may read besides the graph.

The context carries the target (opaque until targets land), optional calibration data,
the analyses a pass may ask for, a logger and a progress callback. Analyses are plain
functions ``(graph, ctx) -> object`` registered per context, computed on first request
and cached per graph *object*: graphs are immutable, so identity is a sound key, and a
weak-keyed cache forgets a graph's results when the graph itself is gone.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import weakref
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from optc.errors import UnknownNameError
from optc.ir.graph import Graph, frozen_mapping

AnalysisFn = Callable[[Graph, "PassContext"], Any]
ProgressFn = Callable[[str, int, int], None]
"""``progress(message, done, total)``: called before each pass and once at the end."""

log = logging.getLogger(__name__)


class AnalysisCache:
    """Results per (graph object, analysis name); counts hits and misses for reports."""

    def __init__(self) -> None:
        self._results: weakref.WeakKeyDictionary[Graph, dict[str, Any]] = \
            weakref.WeakKeyDictionary()
        self.hits = 0
        self.misses = 0

    def get_or_compute(self, graph: Graph, name: str, compute: Callable[[], Any]) -> Any:
        per_graph = self._results.setdefault(graph, {})
        if name in per_graph:
            self.hits += 1
            return per_graph[name]
        self.misses += 1
        result = compute()
        per_graph[name] = result
        return result


@dataclasses.dataclass(frozen=True, eq=False)
class PassContext:
    """Read-only inputs of a pass run; build one per compilation, never share globally."""

    target: Any = None
    calibration: Mapping[str, np.ndarray] | None = None
    analyses: Mapping[str, AnalysisFn] = dataclasses.field(default_factory=frozen_mapping)
    logger: logging.Logger = dataclasses.field(
        default_factory=lambda: logging.getLogger("optc.pipeline"))
    progress: ProgressFn | None = None
    cache: AnalysisCache = dataclasses.field(default_factory=AnalysisCache, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "analyses", frozen_mapping(self.analyses))
        if self.calibration is not None:
            object.__setattr__(self, "calibration", frozen_mapping(self.calibration))

    def analysis(self, name: str, graph: Graph) -> Any:
        """The result of analysis ``name`` on ``graph``, computed once per graph."""
        fn = self.analyses.get(name)
        if fn is None:
            raise UnknownNameError(unknown_analysis_message(name, self.analyses))
        return self.cache.get_or_compute(graph, name, lambda: fn(graph, self))

    def missing_analyses(self, names: tuple[str, ...]) -> list[str]:
        return [n for n in names if n not in self.analyses]

    def report_progress(self, message: str, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(message, done, total)

    def replace(self, **changes: Any) -> PassContext:
        """A copy with fields replaced; a new analysis set gets a fresh cache."""
        if "analyses" in changes and "cache" not in changes:
            changes["cache"] = AnalysisCache()
        return dataclasses.replace(self, **changes)


def unknown_analysis_message(name: str, known: Mapping[str, Any]) -> str:
    close = difflib.get_close_matches(name, list(known), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    registered = ", ".join(sorted(known)) or "none"
    return f"analysis {name!r} is not registered in this context{hint} (registered: {registered})"
