"""Reading compressed corpora as plain byte streams: gzip, bzip2, xz and zstd, by file extension.

A truncated file must never pass for a short one, and must never lose its complete records: every
codec goes through one small reader of our own that feeds the codec's decompressor object raw blocks
and hands out everything it decoded before raising EOFError (the input ends inside a stream) or the
codec's error (damaged data). The standard library's GzipFile, BZ2File and LZMAFile drop what the
failing call had decoded (up to the whole read); zstandard's stream reader returns a silent short read.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import zlib
from collections.abc import Callable
from typing import Any

COMPRESSIONS = (".gz", ".bz2", ".xz", ".zst", ".zstd")


BLOCK = 1 << 20  # raw bytes read, and at most this many decoded bytes per codec call: memory stays flat


def open_decompressed(compression: str, raw) -> _StreamReader:
    """A file-like object reading the decompressed bytes of ``raw`` (an open binary file)."""
    if compression == ".gz":  # wbits 31: a gzip header and trailer (CRC and size checked), one member
        return _StreamReader(raw, "gzip", lambda: zlib.decompressobj(wbits=31))
    if compression == ".bz2":
        return _StreamReader(raw, "bzip2", bz2.BZ2Decompressor)
    if compression == ".xz":
        return _StreamReader(raw, "xz", lzma.LZMADecompressor)
    import zstandard

    return _StreamReader(raw, "zstd", zstandard.ZstdDecompressor().decompressobj)


class _StreamReader:
    """Reads concatenated streams (gzip members, bz2 and xz streams, zstd frames) through one decompressor
    object each. Everything decoded before damage is handed out first; the next read raises EOFError when
    the input ends inside a stream, or the codec's error for damaged data."""

    def __init__(self, raw, name: str, new: Callable[[], Any]) -> None:
        self._raw, self._name, self._new = raw, name, new
        self._codec, self._fed, self._input, self._drained = new(), False, b"", True
        self._pending, self._error = bytearray(), None

    def read(self, size: int = -1) -> bytes:
        while (size < 0 or len(self._pending) < size) and self._error is None:
            try:
                if not self._step():
                    break
            except truncation_errors() as exc:  # the caller gets it after the data decoded before it
                self._error = exc
        if not self._pending and self._error is not None:
            raise self._error
        if size < 0:
            size = len(self._pending)
        out = bytes(self._pending[:size])
        del self._pending[:size]
        return out

    def _step(self) -> bool:
        """Decode some more into the pending bytes; False at the end of the input."""
        if not self._input and self._drained:  # the codec holds no more output: feed it
            self._input = self._raw.read(BLOCK)
            if not self._input:
                if self._fed:
                    raise EOFError(f"the {self._name} data ends inside a compressed stream")
                return False
        if not self._fed and self._name == "gzip":  # as GzipFile: zero padding between and after members
            self._input = self._input.lstrip(b"\0")
            if not self._input:
                return True
        codec, data = self._codec, self._input
        if self._name == "zstd":  # zstandard's decompressobj has no output limit, and keeps nothing back
            out, self._input, self._drained = codec.decompress(data), b"", True
        elif self._name == "gzip":  # zlib hands back the input it did not get to
            out = codec.decompress(data, BLOCK)
            self._input, self._drained = codec.unconsumed_tail, len(out) < BLOCK
        else:  # bz2 and lzma keep it inside
            out = codec.decompress(data, BLOCK)
            self._input, self._drained = b"", codec.needs_input
        self._pending += out
        self._fed = True
        if codec.eof:  # the next stream starts in what this one left over (zlib's unconsumed_tail repeats it)
            self._input, self._codec, self._fed, self._drained = codec.unused_data, self._new(), False, True
        return True

    def __enter__(self) -> _StreamReader:
        return self

    def __exit__(self, *exc) -> None:
        self._raw.close()


def truncation_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [EOFError, lzma.LZMAError, gzip.BadGzipFile, zlib.error, OSError]
    try:
        import zstandard

        errors.append(zstandard.ZstdError)
    except ImportError:  # pragma: no cover - zstandard is a dependency
        pass
    return tuple(errors)
