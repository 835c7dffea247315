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


def fsync_file(path: str | os.PathLike) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def publish(temp: str | os.PathLike, final: str | os.PathLike) -> None:
    """fsync ``temp`` and rename it to ``final`` (atomic on POSIX filesystems)."""
    fsync_file(temp)
    os.replace(temp, final)
    fsync_dir(Path(final).parent)


def publish_pair(temps: tuple[Path, Path], finals: tuple[str, str]) -> None:
    """Publish two files that only make sense together (a ``.bin`` and its ``.idx``).

    Both are made durable first, so the two renames follow each other at once; an older second
    file is removed before the first rename (an old ``.idx`` never sits beside a new ``.bin``); and
    if the second rename does not happen (Ctrl-C, SIGTERM between them), the first is taken back.
    """
    for temp in temps:
        fsync_file(temp)
    remove_quietly(finals[1])
    try:
        os.replace(temps[0], finals[0])
        os.replace(temps[1], finals[1])
    except BaseException:
        if not os.path.exists(temps[0]) and os.path.exists(temps[1]):
            remove_quietly(finals[0])
        raise
    fsync_dir(Path(finals[1]).parent)


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
