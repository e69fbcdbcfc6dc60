"""``measure_artifact``: time an existing artifact, here or on a remote device.

The artifact is hash-checked before its library is loaded (``read_manifest``); its
``report.json`` (covered by the same hashes) supplies the prediction to compare with.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from optc.compiler.execution import WARMUP, time_artifact
from optc.compiler.report import timing_record
from optc.compiler.rpc import RpcTracker
from optc.compiler.staging import REPORT
from optc.errors import UserInputError


def measure_artifact(artifact: str | Path, *, rpc: RpcTracker | None = None, repeat: int = 10,
                     warmup: int = WARMUP) -> dict[str, Any]:
    """Time ``artifact``; a JSON-ready document with the timing and the compile's figures."""
    from optc.codegen import read_manifest  # deferred: imports TVM

    if repeat < 1:
        raise UserInputError(f"repeat must be at least 1, got {repeat}")
    artifact = Path(artifact)
    manifest = read_manifest(artifact)  # every file's SHA-256 checked
    timing = time_artifact(artifact, rpc, repeat=repeat, warmup=warmup)
    report = _report(artifact, manifest.data.get("files", {}))
    predicted = report.get("predicted") or {}
    compiled = report.get("measured") or {}
    return {
        "artifact": str(artifact),
        "model": manifest.data.get("model"),
        "graph_hash": manifest.data.get("graph_hash"),
        "target": report.get("target", {}).get("name"),
        "tvm_target": manifest.target,
        "rpc": None if rpc is None else str(rpc),
        "measured": timing_record(timing),
        "predicted_s": predicted.get("latency_s"),
        "measured_at_compile_s": compiled.get("median_s"),
    }


def _report(artifact: Path, files: Any) -> dict[str, Any]:
    """The artifact's report (an artifact written by ``optc.codegen`` alone may lack it)."""
    if REPORT not in files:
        return {}
    try:
        report = json.loads((artifact / REPORT).read_text())
    except ValueError as exc:
        raise UserInputError(f"{artifact}/{REPORT}: not JSON ({exc})") from exc
    return report if isinstance(report, dict) else {}
