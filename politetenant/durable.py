"""Files that outlive a power loss, not only a crash of the process.

``fsync`` of a file makes its bytes durable, not its name: a file just created or renamed can vanish,
with everything in it, if the machine loses power before its directory reaches the disk (fsync(2):
"an explicit fsync() on a file descriptor for the directory is also needed"). A crash of the process
alone loses nothing of the kind, which is why only a node's power loss or kernel panic shows it.
The files that must not vanish so: the ingest spool's (events already answered 2xx) and the local key
file (keys that sealed data already written).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def fsync_directory(directory: str | os.PathLike[str]) -> None:
    """Make the names created, renamed or removed in ``directory`` so far durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_durably(target: str | os.PathLike[str], content: bytes) -> None:
    """``target`` holds ``content`` (mode 0600), the old content or the new, never a part, after a
    crash or a power loss: written to a temporary file beside it, fsynced, renamed over it, and the
    directory fsynced so the rename is not undone."""
    path = Path(target)
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)  # 0600
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)
