"""Write a model directory all at once: into a temporary directory beside OUT, renamed into place
only when complete, so an error or Ctrl-C never leaves a half-written model or clobbers one."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from pathlib import Path


class OutputExists(FileExistsError):
    pass


def check_target(out: Path, force: bool) -> None:
    if out.exists() and not force:
        raise OutputExists(f"{out} already exists; pass --force to replace it")
    if out.exists() and not out.is_dir():
        raise OutputExists(f"{out} exists and is not a directory")


@contextlib.contextmanager
def staged_directory(out: Path, force: bool):
    """Yields an empty directory on OUT's filesystem; on success it becomes OUT."""
    out = out.resolve()
    check_target(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        yield staging
        check_target(out, force)
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            out.rename(old / out.name)
            staging.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
