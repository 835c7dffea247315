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
    index: str | None = None  # a MediaWiki multistream dump's index: shards start at its bz2 streams

    @property
    def splittable(self) -> bool:
        """Shards may start inside this file (at record boundaries, or a multistream dump's streams)."""
        return (self.compression is None and self.format in ("jsonl", "text", "mediawiki", "namuwiki")) or bool(
            self.index)


@dataclass
class Chunk:
    """A block of whole records from one file, for one worker."""

    source: str
    first_line: int  # 1-based line (or row) number of the chunk's first byte (or row)
    mode: str  # "jsonl", records.LINE, records.PARAGRAPH, "table", "mediawiki", "namumark" or "json"
    data: Any  # bytes; a pyarrow RecordBatch ("table"); (number, title, markup) tuples; (number, element) tuples
    disk_bytes: int  # on-disk bytes this chunk accounts for (progress and ETA)
    truncated: bool = False  # the file ended early here; the partial record after it was dropped


class TruncatedFile(Exception):
    """A file ends early. ``rest`` holds its last complete records; ``where`` says where the damage starts
    ("line 12", "page 95091"). Preprocessing turns this into an error or, when asked, a counted skip."""

    def __init__(self, file: InputFile, where: str, cause: BaseException, rest: Chunk) -> None:
        super().__init__(str(cause))
        self.file, self.where, self.cause, self.rest = file, where, cause, rest

    def explain(self) -> str:
        """The error for a run without --skip-bad-input: the file, where, and the fix."""
        return (f"{self.file.path}: the data ends early after {self.where} ({self.cause}): the file is truncated or "
                "damaged. Re-download or recompress it, or pass --skip-bad-input to keep its complete records and "
                "count the file as truncated.")
