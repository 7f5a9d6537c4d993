"""File-system steps shared by every writer of the package (the store, checkpoints): kept apart so that the
layers that may not import each other (data, model) use one copy."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["fsync_dir"]


def fsync_dir(path: Path) -> None:
    """Makes a rename or a new entry in directory ``path`` durable (best effort: a missing directory or a file
    system that refuses fsync on directories is not an error)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on directories
    finally:
        os.close(fd)
