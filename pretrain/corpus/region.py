"""A byte range of a file read as a file of its own, for shards that start and end inside a file."""

from __future__ import annotations

import codecs

BOM = codecs.BOM_UTF8  # a file's first bytes, read as utf-8-sig reads them: not text


class Region:
    """Read-only file object over ``[start, end)`` of ``path``; ``consumed()`` counts the bytes read."""

    def __init__(self, path: str, start: int, end: int) -> None:
        self._handle = open(path, "rb")
        self._handle.seek(start)
        self.start, self.end, self._position = start, end, start

    def read(self, size: int = -1) -> bytes:
        left = self.end - self._position
        data = self._handle.read(left if size is None or size < 0 else min(size, left))
        self._position += len(data)
        return data

    def readable(self) -> bool:
        return True

    def consumed(self) -> int:
        return self._position - self.start

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> Region:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class WithoutBom:
    """A readable (from a file's start) less the UTF-8 byte-order mark its first bytes may hold."""

    def __init__(self, readable) -> None:
        self._readable, self._first = readable, True

    def read(self, size: int = -1) -> bytes:
        if not self._first or size == 0:  # ijson asks for nothing first
            return self._readable.read(size)
        self._first = False
        data = self._readable.read(size)
        return (data[len(BOM):] or self._readable.read(size)) if data.startswith(BOM) else data
