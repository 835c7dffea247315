"""Reading compressed corpora as plain byte streams: gzip, bzip2, xz and zstd, by file extension.

A truncated file must never pass for a short one. The standard library's readers raise EOFError
when a stream ends early; zstandard's stream reader returns a silent short read, so zstd goes
through a small reader of our own that checks every frame is complete.
"""

from __future__ import annotations

import bz2
import gzip
import lzma

COMPRESSIONS = (".gz", ".bz2", ".xz", ".zst", ".zstd")


def open_decompressed(compression: str, raw):
    """A file-like object reading the decompressed bytes of ``raw`` (an open binary file)."""
    if compression == ".gz":
        return gzip.GzipFile(fileobj=raw)
    if compression == ".bz2":
        return bz2.BZ2File(raw)
    if compression == ".xz":
        return lzma.LZMAFile(raw)
    return _ZstdReader(raw)


class _ZstdReader:
    """Reads concatenated zstd frames and raises EOFError when the input ends inside a frame
    (zstandard's stream_reader returns a silent short read for a truncated file)."""

    def __init__(self, raw) -> None:
        import zstandard

        self._raw, self._factory = raw, zstandard.ZstdDecompressor()
        self._frame, self._fed, self._pending = self._factory.decompressobj(), False, b""

    def read(self, size: int) -> bytes:
        while len(self._pending) < size:
            data = self._raw.read(1 << 20)
            if not data:
                if self._fed and not self._frame.eof and not self._pending:
                    raise EOFError("the zstd stream ends inside a frame")
                break  # hand out what was decoded; the next read raises
            while data:
                self._pending += self._frame.decompress(data)
                self._fed = True
                data = b""
                if self._frame.eof:  # the next frame starts in what this one left over
                    data, self._frame, self._fed = self._frame.unused_data, self._factory.decompressobj(), False
        out, self._pending = self._pending[:size], self._pending[size:]
        return out

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._raw.close()


def truncation_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [EOFError, lzma.LZMAError, gzip.BadGzipFile, OSError]
    try:
        import zstandard

        errors.append(zstandard.ZstdError)
    except ImportError:  # pragma: no cover - zstandard is a dependency
        pass
    return tuple(errors)
