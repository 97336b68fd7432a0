"""Writing files so that a reader never sees half of one.

Every file is written in full under a unique hidden temporary name in its directory,
then moved over the old one (a rename, atomic on POSIX).  All files are written before
any is moved, so a failure while writing (a full disk) leaves every old file as it was.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_all(files: dict[Path, str]) -> None:
    """Write every file under a unique temporary name, then move each into place."""
    mask = os.umask(0)
    os.umask(mask)
    tmps: list[Path] = []
    try:
        for path, content in files.items():
            fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            tmp = Path(name)
            tmps.append(tmp)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(content)
                f.flush()
                os.fsync(f.fileno())  # on disk before it replaces anything
            os.chmod(tmp, 0o666 & ~mask)
        for path, tmp in zip(files, tmps, strict=True):
            os.replace(tmp, path)
    finally:
        for tmp in tmps:
            tmp.unlink(missing_ok=True)
