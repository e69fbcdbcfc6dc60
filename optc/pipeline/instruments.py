"""Instruments: hooks the pass manager calls around every pass.

An instrument is any object with ``before_pass(index, pass_, graph, ctx)`` and
``after_pass(record, pass_, before, after, ctx)``; subclass ``Instrument`` to implement
only one of them. Built in: ``TimingInstrument`` (per-pass wall time table),
``VerifyInstrument`` (``optc.ir.verify`` after every pass) and ``IRDumpInstrument``
(canonical text before and after every pass, written to a folder).
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from optc.ir.graph import Graph
from optc.ir.text_print import DEFAULT_INLINE_LIMIT, print_graph
from optc.ir.verify import IRVerificationError, verify
from optc.pipeline.errors import PassVerificationError

if TYPE_CHECKING:
    from optc.pipeline.base import Pass
    from optc.pipeline.context import PassContext
    from optc.pipeline.manager import PassRecord

log = logging.getLogger(__name__)


class InstrumentLike(Protocol):
    def before_pass(self, index: int, pass_: Pass, graph: Graph, ctx: PassContext) -> None: ...

    def after_pass(self, record: PassRecord, pass_: Pass, before: Graph, after: Graph,
                   ctx: PassContext) -> None: ...


class Instrument:
    """No-op base: override the hooks you need."""

    def before_pass(self, index: int, pass_: Pass, graph: Graph, ctx: PassContext) -> None:
        return None

    def after_pass(self, record: PassRecord, pass_: Pass, before: Graph, after: Graph,
                   ctx: PassContext) -> None:
        return None


class TimingInstrument(Instrument):
    """Collects each pass's wall time and logs it; ``table()`` formats a report."""

    def __init__(self) -> None:
        self.records: list[PassRecord] = []

    def after_pass(self, record: PassRecord, pass_: Pass, before: Graph, after: Graph,
                   ctx: PassContext) -> None:
        self.records.append(record)
        ctx.logger.info("pass %s took %.3f s (%d -> %d nodes%s)", record.name, record.seconds,
                        record.nodes_before, record.nodes_after,
                        "" if record.modified else ", unchanged")

    @property
    def total_seconds(self) -> float:
        return sum(r.seconds for r in self.records)

    def table(self) -> str:
        width = max([len(r.text) for r in self.records] + [4])
        lines = [f"{'pass':<{width}}  {'seconds':>9}  {'nodes':>13}  modified"]
        for r in self.records:
            nodes = f"{r.nodes_before}->{r.nodes_after}"
            lines.append(f"{r.text:<{width}}  {r.seconds:9.4f}  {nodes:>13}  "
                         f"{'yes' if r.modified else 'no'}")
        lines.append(f"{'total':<{width}}  {self.total_seconds:9.4f}")
        return "\n".join(lines)


class VerifyInstrument(Instrument):
    """Runs the IR verifier on the input and after every pass that changed the graph.

    A broken input is the user's (``IRVerificationError``, exit 2); a graph broken by
    a pass is that pass's bug (``PassVerificationError`` naming the pass).
    """

    def __init__(self, types: bool = False) -> None:
        self.types = types

    def before_pass(self, index: int, pass_: Pass, graph: Graph, ctx: PassContext) -> None:
        if index == 0:
            verify(graph, types=self.types)

    def after_pass(self, record: PassRecord, pass_: Pass, before: Graph, after: Graph,
                   ctx: PassContext) -> None:
        if after is before:
            return
        try:
            verify(after, types=self.types)
        except IRVerificationError as exc:
            raise PassVerificationError(
                f"pass {record.text!r} (#{record.index + 1} in the pipeline) broke the IR: "
                f"{exc}", exc.problems) from exc


class IRDumpInstrument(Instrument):
    """Writes ``NN-<pass>-before.ir`` / ``NN-<pass>-after.ir`` (canonical text) to a folder.

    Tensors over ``inline_limit`` elements are printed as content digests, so dumps
    stay small; ``only_modified`` skips passes that left the graph unchanged.
    """

    def __init__(self, folder: str | os.PathLike[str], only_modified: bool = False,
                 inline_limit: int | None = DEFAULT_INLINE_LIMIT) -> None:
        self.folder = Path(folder)
        self.only_modified = only_modified
        self.inline_limit = inline_limit
        self.written: list[Path] = []

    def after_pass(self, record: PassRecord, pass_: Pass, before: Graph, after: Graph,
                   ctx: PassContext) -> None:
        if self.only_modified and not record.modified:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        stem = f"{record.index + 1:02d}-{_file_safe(record.name)}"
        for suffix, graph in (("before", before), ("after", after)):
            path = self.folder / f"{stem}-{suffix}.ir"
            path.write_text(print_graph(graph, inline_limit=self.inline_limit))
            self.written.append(path)
        log.debug("dumped IR around pass %s to %s", record.name, self.folder)


def _file_safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.\-]", "_", name)
