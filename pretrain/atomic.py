"""Atomic file output: write under a temporary name, fsync, then rename.

A crash, Ctrl-C or ``kill -9`` can leave a ``*.tmp-<pid>`` file behind, never a file under its final
name that looks complete but is not.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path


def temp_path_for(final: str | os.PathLike) -> Path:
    """The temporary name a file is written under before it is renamed to ``final``."""
    final = Path(final)
    return final.with_name(f"{final.name}.tmp-{os.getpid()}")


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a rename inside ``path`` durable (no-op where directories cannot be opened)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def publish(temp: str | os.PathLike, final: str | os.PathLike) -> None:
    """fsync ``temp`` and rename it to ``final`` (atomic on POSIX filesystems)."""
    with open(temp, "rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(temp, final)
    fsync_dir(Path(final).parent)


def remove_quietly(*paths: str | os.PathLike) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


@contextlib.contextmanager
def atomic_open(final: str | os.PathLike, mode: str = "w", **kwargs) -> Iterator:
    """Open ``final`` for writing through a temporary file that is renamed only on success."""
    temp = temp_path_for(final)
    try:
        with open(temp, mode, **kwargs) as handle:
            yield handle
        publish(temp, final)
    finally:
        remove_quietly(temp)


def atomic_write_text(final: str | os.PathLike, text: str) -> None:
    with atomic_open(final, "w", encoding="utf-8") as handle:
        handle.write(text)
