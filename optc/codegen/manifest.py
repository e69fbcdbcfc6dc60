"""An artifact's ``manifest.json``: what was compiled, for which target, and file hashes.

The manifest lists the SHA-256 of every other file in the artifact folder; reading an
artifact checks them all, so a modified, truncated or swapped library is refused before
TVM loads (and runs the code of) it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from optc.codegen.signature import TensorSpec
from optc.errors import UserInputError

FORMAT = "optc-artifact"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
LIBRARY = "model.so"
ONNX = "model.onnx"
REPORT = "report.json"
_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def file_hashes(folder: Path) -> dict[str, str]:
    """SHA-256 of every file in ``folder`` except the manifest, by file name."""
    return {p.name: sha256_file(p) for p in sorted(folder.iterdir())
            if p.is_file() and p.name != MANIFEST}


@dataclasses.dataclass(frozen=True)
class Manifest:
    """A verified artifact's manifest; ``folder`` is the artifact folder."""

    folder: Path
    data: Mapping[str, Any] = dataclasses.field(hash=False)

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return tuple(TensorSpec.from_json(d) for d in self.data["inputs"])

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return tuple(TensorSpec.from_json(d) for d in self.data["outputs"])

    @property
    def target(self) -> Mapping[str, Any]:
        return self.data["target"]

    @property
    def host_target(self) -> Mapping[str, Any]:
        """The ``llvm`` target of the library's CPU code (the target itself for CPUs)."""
        return self.target.get("host", self.target)

    @property
    def device(self) -> str:
        """``"cuda"`` or ``"cpu"``: where the model's kernels run."""
        return "cuda" if self.target.get("kind") == "cuda" else "cpu"

    @property
    def library(self) -> Path:
        return self.folder / LIBRARY

    @property
    def library_sha256(self) -> str:
        return str(self.data["files"][LIBRARY])


def read_manifest(folder: str | Path) -> Manifest:
    """Read an artifact's manifest and verify every file hash; problems -> ``UserInputError``."""
    folder = Path(folder)
    try:
        data = json.loads((folder / MANIFEST).read_text())
    except FileNotFoundError as exc:
        raise UserInputError(f"{folder}: not an optc artifact (no {MANIFEST})") from exc
    except (OSError, ValueError) as exc:
        raise UserInputError(f"{folder}/{MANIFEST}: unreadable ({exc})") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise UserInputError(f"{folder}/{MANIFEST}: not an optc artifact manifest")
    if data.get("format_version") != FORMAT_VERSION:
        raise UserInputError(f"{folder}: artifact format version {data.get('format_version')}, "
                             f"this optc reads version {FORMAT_VERSION}; rebuild it")
    _verify_files(folder, data.get("files"))
    return Manifest(folder, data)


def _verify_files(folder: Path, files: Any) -> None:
    if not isinstance(files, Mapping) or LIBRARY not in files:
        raise UserInputError(f"{folder}/{MANIFEST}: no file hashes (or no {LIBRARY}) listed")
    for name, expected in files.items():
        if Path(name).name != name or name in ("", ".", ".."):
            raise UserInputError(f"{folder}/{MANIFEST}: file name {name!r} is not a plain name")
        path = folder / name
        if not path.is_file():
            raise UserInputError(f"{folder}: {name} is missing")
        if sha256_file(path) != expected:
            raise UserInputError(f"{folder}: {name} does not match the SHA-256 in {MANIFEST} "
                                 "(modified or corrupted); rebuild the artifact")


def write_manifest(folder: Path, data: Mapping[str, Any]) -> None:
    """Write ``data`` plus the format header and the hashes of the folder's files."""
    manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, **data,
                "files": file_hashes(folder)}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
