"""Record boundaries in line-based text: a document per line, or documents separated by blank lines.

The reader cuts byte blocks only at record boundaries so workers can parse chunks independently,
and shards split a file at the first boundary at or after a byte offset, so that every shard agrees
where the previous one stopped. A boundary is the start of a line (line mode) or the position right
after a blank line (paragraph mode; a blank line holds only whitespace). Offset 0 is always one.
"""

from __future__ import annotations

import os

LINE = "line"
PARAGRAPH = "paragraph"


def _is_blank(line: bytes) -> bool:
    return not line.strip()


def last_boundary(buf: bytes, mode: str) -> int:
    """The last boundary in ``buf`` (which starts at one), or 0 when there is none after its start."""
    if mode == LINE:
        return buf.rfind(b"\n") + 1
    end = buf.rfind(b"\n")
    while end >= 0:
        start = buf.rfind(b"\n", 0, end)
        if _is_blank(buf[start + 1 : end]):
            return end + 1
        end = start
    return 0


NEED_CONTEXT = -1


def next_boundary(buf: bytes, pos: int, mode: str, buf_is_file_start: bool) -> int | None:
    """The first boundary at or after ``pos`` in ``buf``.

    None when ``buf`` has none after ``pos``; NEED_CONTEXT when the line around ``pos`` starts
    before ``buf`` does (paragraph mode must see the whole line to know whether it is blank).
    """
    if pos == 0 and buf_is_file_start:
        return 0
    if mode == LINE:
        if pos > 0 and buf[pos - 1 : pos] == b"\n":
            return pos
        newline = buf.find(b"\n", pos)
        return None if newline < 0 else newline + 1
    # paragraph: walk lines from the one that ends at or after pos-1
    end = buf.find(b"\n", max(pos - 1, 0))
    while end >= 0:
        start = buf.rfind(b"\n", 0, end)
        if start < 0 and not buf_is_file_start:
            return NEED_CONTEXT
        if end + 1 >= pos and _is_blank(buf[start + 1 : end]):
            return end + 1
        end = buf.find(b"\n", end + 1)
    return None


def find_boundary(path: str | os.PathLike, pos: int, mode: str) -> int:
    """The first boundary at or after byte ``pos`` of an uncompressed file (its size if none)."""
    size = os.path.getsize(path)
    if pos <= 0:
        return 0
    if pos >= size:
        return size
    window = 1 << 16
    with open(path, "rb") as handle:
        while True:
            low = max(0, pos - window)
            handle.seek(low)
            buf = handle.read(pos - low + window)
            found = next_boundary(buf, pos - low, mode, buf_is_file_start=low == 0)
            if found is None and low + len(buf) >= size:
                return size
            if found is not None and found != NEED_CONTEXT:
                return low + found
            window *= 4


def count_newlines(path: str | os.PathLike, stop: int) -> int:
    """Newlines in the first ``stop`` bytes (to number lines in a shard that starts mid-file)."""
    count = 0
    with open(path, "rb") as handle:
        remaining = stop
        while remaining > 0:
            block = handle.read(min(remaining, 1 << 24))
            if not block:
                break
            count += block.count(b"\n")
            remaining -= len(block)
    return count


def split_records(buf: bytes, mode: str, first_line: int) -> tuple[list[bytes], list[int]]:
    """Split a chunk (starting at a boundary) into records and their 1-based first line numbers.

    Line mode: one record per non-blank line. Paragraph mode: consecutive non-blank lines joined with
    ``\\n``. A trailing ``\\r`` (Windows line ends) is removed from every line.
    """
    lines = buf.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    records: list[bytes] = []
    numbers: list[int] = []
    if mode == LINE:
        for offset, line in enumerate(lines):
            if line.endswith(b"\r"):
                line = line[:-1]
            if line.strip():
                records.append(line)
                numbers.append(first_line + offset)
        return records, numbers
    current: list[bytes] = []
    for offset, line in enumerate(lines):
        if line.endswith(b"\r"):
            line = line[:-1]
        if line.strip():
            if not current:
                numbers.append(first_line + offset)
            current.append(line)
        elif current:
            records.append(b"\n".join(current))
            current = []
    if current:
        records.append(b"\n".join(current))
    return records, numbers
