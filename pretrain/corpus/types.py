"""What the corpus readers hand out: input files, chunks of whole records, and their errors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class InputError(ValueError):
    """Bad input the user must fix; the message names the file (and line) and the fix."""


@dataclass(frozen=True)
class InputFile:
    path: str
    format: str
    compression: str | None
    size: int

    @property
    def splittable(self) -> bool:
        return self.compression is None and self.format in ("jsonl", "text")


@dataclass
class Chunk:
    """A block of whole records from one file, for one worker."""

    source: str
    first_line: int  # 1-based line (or row) number of the chunk's first byte (or row)
    mode: str  # "jsonl", records.LINE, records.PARAGRAPH or "table"
    data: Any  # bytes, or a pyarrow RecordBatch for "table"
    disk_bytes: int  # on-disk bytes this chunk accounts for (progress and ETA)
    truncated: bool = False  # the file ended early here; the partial record after it was dropped


class TruncatedFile(Exception):
    """A compressed file ends early. ``rest`` holds its last complete records; ``line`` is the last
    complete line. Preprocessing turns this into an error or, when asked, a counted skip."""

    def __init__(self, file: InputFile, line: int, cause: BaseException, rest: Chunk) -> None:
        super().__init__(str(cause))
        self.file, self.line, self.cause, self.rest = file, line, cause, rest
