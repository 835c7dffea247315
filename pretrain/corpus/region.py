"""A byte range of a file read as a file of its own, for shards that start and end inside a file."""

from __future__ import annotations


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
