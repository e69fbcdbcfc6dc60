"""The output folder of ``optc compile``: staged beside its destination, committed at the end.

The artifact is written (library exported, files hashed) into a hidden folder next
to OUT, loaded and checked from there, and only then gets its final report and is
renamed into place. So a failed compile, a mismatching output check or an interrupt
leaves OUT as it was (absent, or the previous artifact), and the library is exported
once (LLVM emits machine code at export: about half of the build time).
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from optc.errors import UserInputError

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"  # as optc.codegen.manifest (not imported: that imports TVM)
REPORT = "report.json"
_MANIFEST_HEADER = ("format", "format_version", "files")


def check_output_folder(out: Path) -> None:
    """Refuse an OUT that could not be replaced by an artifact, before any work is done."""
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise UserInputError(f"{out} exists and is not a folder; refusing to replace it")
    if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise UserInputError(f"{out} is a non-empty folder that is not an optc artifact; "
                             "refusing to replace it")
    if not out.parent.is_dir():
        raise UserInputError(f"cannot write artifact {out}: folder {out.parent} does not exist")


class Staging:
    """A hidden scratch folder beside OUT (``.<name>.compile-*``), removed on exit.

    Creating it is the writability check: it fails, as a ``UserInputError``, exactly
    when the artifact could not be written later.
    """

    def __init__(self, out: Path) -> None:
        check_output_folder(out)
        self.out = out
        try:
            self.root = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.compile-"))
        except OSError as exc:
            raise UserInputError(f"cannot write artifact {out}: {out.parent} is not writable "
                                 f"({exc.strerror or exc})") from exc
        self.artifact = self.root / out.name

    def __enter__(self) -> Staging:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def commit(self, report: Mapping[str, Any]) -> Path:
        """Write the final report into the staged artifact, re-hash it, move it to OUT."""
        from optc.codegen.manifest import write_manifest  # deferred: imports TVM

        (self.artifact / REPORT).write_text(
            json.dumps(dict(report), indent=2, sort_keys=True, allow_nan=False) + "\n")
        data = json.loads((self.artifact / MANIFEST).read_text())
        write_manifest(self.artifact, {k: v for k, v in data.items()
                                       if k not in _MANIFEST_HEADER})
        check_output_folder(self.out)  # OUT may have changed during a long build
        # codegen imports TVM; only a compile that got this far needs it.
        from optc.codegen.artifact import replace_folder

        replace_folder(self.artifact, self.out)
        log.info("wrote artifact %s", self.out)
        return self.out
