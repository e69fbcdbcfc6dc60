"""The latency dataset: JSON Lines (gzip when the name ends in ``.gz``), versioned.

Line 1 is a header ``{"format": "optc-latency", "version": 1, "created": ISO time,
"machine": {...}}``; every further line is one ``Sample``: one model measured on one
device. The format is documented in ``docs/latency-dataset.md``.
"""

from __future__ import annotations

import dataclasses
import datetime
import gzip
import io
import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import IO, Any

from optc.errors import UserInputError
from optc.ir import Graph

FORMAT = "optc-latency"
VERSION = 1
FIELDS = ("model", "spec", "graph_hash", "device", "latency_s", "p90_s", "repeats", "flops",
          "bytes")


@dataclasses.dataclass(frozen=True)
class Sample:
    """One model on one device.

    ``model``: an ``ArchSpec`` key (``gen:...``), ``zoo:NAME`` or an ONNX file path;
    ``spec``: the ``ArchSpec`` JSON for generated models, else None; ``latency_s`` /
    ``p90_s``: median and 90th percentile of ``repeats`` runs; ``flops`` / ``bytes``:
    the roofline model's operation count and memory traffic for the graph; ``min_s``
    (optional): the fastest run, the least disturbed estimate on a shared machine.
    """

    model: str
    spec: Mapping[str, Any] | None = dataclasses.field(hash=False)
    graph_hash: str
    device: str
    latency_s: float
    p90_s: float
    repeats: int
    flops: float
    bytes: float
    min_s: float | None = None

    def to_json(self) -> dict[str, Any]:
        row = {name: getattr(self, name) for name in FIELDS}
        if self.min_s is not None:
            row["min_s"] = self.min_s
        return row

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> Sample:
        missing = [name for name in FIELDS if name not in data]
        if missing:
            raise ValueError(f"missing {', '.join(missing)}")
        spec = data["spec"]
        if spec is not None and not isinstance(spec, Mapping):
            raise ValueError("spec is neither an object nor null")
        return Sample(str(data["model"]), spec, str(data["graph_hash"]), str(data["device"]),
                      float(data["latency_s"]), float(data["p90_s"]), int(data["repeats"]),
                      float(data["flops"]), float(data["bytes"]),
                      None if data.get("min_s") is None else float(data["min_s"]))


def header(machine: Mapping[str, Any]) -> dict[str, Any]:
    created = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    return {"format": FORMAT, "version": VERSION, "created": created, "machine": dict(machine)}


def save_dataset(path: str | Path, samples: Iterable[Sample], machine: Mapping[str, Any]) -> Path:
    """Write the dataset atomically: a reader sees the old file or the new one, never half."""
    path = Path(path)
    if not path.parent.is_dir():
        raise UserInputError(f"cannot write {path}: folder {path.parent} does not exist")
    lines = [json.dumps(header(machine), sort_keys=True)]
    lines += [json.dumps(s.to_json(), sort_keys=True) for s in samples]
    data = ("\n".join(lines) + "\n").encode()
    if path.name.endswith(".gz"):
        data = gzip.compress(data, mtime=0)  # mtime 0: same rows, same bytes
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.tmp-")
    try:
        # mkstemp makes the file private (0600); a dataset is meant to be shared and packaged.
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _open(path: Path) -> IO[str]:
    if path.name.endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return path.open(encoding="utf-8")


def read_dataset(path: str | Path) -> tuple[dict[str, Any], list[Sample]]:
    """The header and the samples of a dataset file; a bad file -> one-line ``UserInputError``."""
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"latency dataset {path} does not exist")
    try:
        with _open(path) as handle:
            lines = [line for line in handle if line.strip()]
    except (OSError, EOFError, UnicodeDecodeError) as exc:  # gzip.BadGzipFile is an OSError
        raise UserInputError(f"{path}: not a readable latency dataset ({exc})") from exc
    if not lines:
        raise UserInputError(f"{path}: empty file, not a latency dataset")
    head = _check_header(path, lines[0])
    samples = []
    for number, line in enumerate(lines[1:], start=2):
        try:
            samples.append(Sample.from_json(json.loads(line)))
        except (ValueError, TypeError, AttributeError) as exc:
            raise UserInputError(f"{path}:{number}: bad sample row ({exc})") from exc
    return head, samples


def _check_header(path: Path, line: str) -> dict[str, Any]:
    try:
        head = json.loads(line)
    except ValueError as exc:
        raise UserInputError(f"{path}: first line is not JSON, not a latency dataset") from exc
    if not isinstance(head, dict) or head.get("format") != FORMAT:
        raise UserInputError(f"{path}: not an {FORMAT} dataset (no header line)")
    if head.get("version") != VERSION:
        raise UserInputError(f"{path}: {FORMAT} version {head.get('version')!r} is not "
                             f"supported (this optc reads version {VERSION})")
    return head


def load_dataset(path: str | Path) -> list[Sample]:
    """The samples of a dataset file."""
    return read_dataset(path)[1]


def by_device(samples: Iterable[Sample]) -> dict[str, list[Sample]]:
    """Samples grouped by device, each group in file order."""
    groups: dict[str, list[Sample]] = {}
    for sample in samples:
        groups.setdefault(sample.device, []).append(sample)
    return groups


def graph_for(sample: Sample) -> Graph:
    """The graph a sample was measured on: rebuilt from its spec, a zoo model, or the file."""
    from optc.latency.arch import ArchSpec
    from optc.latency.models import zoo_graph

    if sample.spec is not None:
        return ArchSpec.from_json(sample.spec).build()
    if sample.model.startswith("zoo:"):
        return zoo_graph(sample.model.removeprefix("zoo:"))
    from optc.frontend import load_onnx

    return load_onnx(sample.model)
