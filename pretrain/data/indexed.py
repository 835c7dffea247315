"""Megatron-LM's memory-mapped indexed dataset: ``PREFIX.bin`` (tokens) + ``PREFIX.idx`` (index).

Byte-compatible with megatron-core's ``IndexedDataset`` / ``IndexedDatasetBuilder``. The ``.idx`` is::

    b"MMIDIDX\\x00\\x00"        9-byte magic
    <Q version = 1             <B dtype code (see DTYPE_CODES)
    <Q sequence count S         <Q document count D (= documents + 1)
    int32[S]  sequence lengths in tokens
    int64[S]  sequence byte offsets into .bin
    int64[D]  document indices: document k spans sequences [doc[k], doc[k+1])

A *sequence* is one sentence (``--split-sentences``) or one whole document; a document is one or
more consecutive sequences. The writer streams: the index arrays are spilled to temporary files
while tokens are written, so memory stays flat however large the corpus. Final names appear only
after everything is written (``.bin`` first, then ``.idx``).
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from pretrain.atomic import atomic_write_text, publish_pair, remove_quietly, temp_path_for
from pretrain.corpus.types import InputError

MAGIC = b"MMIDIDX\x00\x00"
VERSION = 1
DTYPE_CODES: dict[int, type[np.number]] = {
    1: np.uint8, 2: np.int8, 3: np.int16, 4: np.int32,
    5: np.int64, 6: np.float64, 7: np.float32, 8: np.uint16,
}
_CODE_OF = {np.dtype(dtype): code for code, dtype in DTYPE_CODES.items()}
_HEADER = struct.Struct("<9sQBQQ")  # magic, version, dtype code, sequence count, document count
_CHUNK = 1 << 20  # index entries handled at once when streaming (8 MiB of int64): memory stays flat


class IndexFormatError(ValueError):
    """An ``.idx``/``.bin`` pair is missing, truncated, or not in Megatron's format."""


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits (Megatron's rule: vocabulary below 65,500), else int32."""
    return np.dtype(np.uint16 if vocab_size < 65500 else np.int32)


def bin_path(prefix: str | os.PathLike) -> str:
    return f"{prefix}.bin"


def idx_path(prefix: str | os.PathLike) -> str:
    return f"{prefix}.idx"


def meta_path(prefix: str | os.PathLike) -> str:
    """``PREFIX.meta.json``: the counts and tokenizer of a dataset this project wrote (pretrain/data/provenance.py)."""
    return f"{prefix}.meta.json"


def dataset_exists(prefix: str | os.PathLike) -> bool:
    """True when either file of the pair exists (a half pair still blocks a new write)."""
    return os.path.exists(idx_path(prefix)) or os.path.exists(bin_path(prefix))


class IndexedDatasetWriter:
    """Streams documents into a ``.bin``/``.idx`` pair under temporary names; ``finalize`` publishes.

    Use as a context manager: leaving the block by an exception (Ctrl-C included) removes the
    temporary files; leaving it normally without ``finalize()`` also discards them.
    """

    def __init__(self, prefix: str | os.PathLike, dtype: np.dtype | type) -> None:
        self.prefix = str(prefix)
        self.dtype = np.dtype(dtype)
        if self.dtype not in _CODE_OF:
            raise ValueError(f"unsupported token dtype {self.dtype}")
        self._bin_temp = temp_path_for(bin_path(self.prefix))
        self._idx_temp = temp_path_for(idx_path(self.prefix))
        self._lengths_temp = temp_path_for(f"{self.prefix}.lengths")
        self._documents_temp = temp_path_for(f"{self.prefix}.documents")
        self.sequence_count = 0
        self.document_count = 0
        self.token_count = 0
        self._done = False
        self._bin = self._lengths = self._documents = None
        try:
            self._bin = open(self._bin_temp, "wb", buffering=1 << 20)
            self._lengths = open(self._lengths_temp, "wb", buffering=1 << 20)
            self._documents = open(self._documents_temp, "wb", buffering=1 << 20)
        except BaseException:
            self.abort()  # the files opened before the one that failed (no space, no inodes left) go too
            raise

    def __enter__(self) -> IndexedDatasetWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self._done:
            self.abort()

    def add_documents(
        self, tokens: np.ndarray, sequence_lengths: np.ndarray, sequences_per_document: np.ndarray
    ) -> None:
        """Append documents given as flat arrays: all tokens, each sequence's length, and how many
        consecutive sequences each document has."""
        sequence_lengths = np.asarray(sequence_lengths, dtype=np.int32)
        sequences_per_document = np.asarray(sequences_per_document, dtype=np.int64)
        self._bin.write(np.ascontiguousarray(tokens, dtype=self.dtype).data)
        self._lengths.write(sequence_lengths.data)
        ends = self.sequence_count + np.cumsum(sequences_per_document, dtype=np.int64)
        self._documents.write(ends.data)
        self.sequence_count += len(sequence_lengths)
        self.document_count += len(sequences_per_document)
        self.token_count += int(np.asarray(tokens).size)

    def add_document(self, sequences: list[np.ndarray] | list[list[int]]) -> None:
        """Append one document made of one or more sequences."""
        arrays = [np.asarray(seq, dtype=self.dtype) for seq in sequences]
        tokens = np.concatenate(arrays) if arrays else np.empty(0, self.dtype)
        self.add_documents(tokens, [len(a) for a in arrays], [len(arrays)])

    def add_dataset(self, other: IndexedDataset) -> None:
        """Append a whole dataset by streaming copies (used to merge shards); ids of a narrower type are widened
        (a tokenizer just under 65,500 ids wrote uint16, its run's copy with special tokens added int32)."""
        if other.dtype != self.dtype and not np.can_cast(other.dtype, self.dtype, "safe"):
            raise IndexFormatError(
                f"{other.prefix} holds {other.dtype} tokens, which do not fit the merged dataset's {self.dtype}"
            )
        if other.dtype == self.dtype:
            with open(bin_path(other.prefix), "rb") as source:
                shutil.copyfileobj(source, self._bin, 1 << 24)
        else:
            for start in range(0, other.num_tokens, 1 << 22):
                self._bin.write(other.tokens(start, min(start + (1 << 22), other.num_tokens)).astype(self.dtype).data)
        for start in range(0, other.num_sequences, _CHUNK):
            self._lengths.write(np.ascontiguousarray(other.sequence_lengths[start : start + _CHUNK]).data)
        doc = other.document_indices
        for start in range(1, len(doc), _CHUNK):
            ends = doc[start : start + _CHUNK].astype(np.int64) + self.sequence_count
            self._documents.write(ends.data)
        self.sequence_count += other.num_sequences
        self.document_count += other.num_documents
        self.token_count += other.num_tokens

    def finalize(self, replace: bool = True, meta: dict | None = None) -> None:
        """Write the ``.idx`` and publish both files under their final names. ``replace=False``: a dataset that
        appeared under them while this one was written (another run on the same prefix) is kept, and this
        one is not published: the run that started last no longer silently wins. ``meta`` (the tokenizer's
        record) is written to ``PREFIX.meta.json`` with the counts, last: a previous one is removed first, so a
        run stopped between the renames leaves no description of other data."""
        try:
            for handle in (self._bin, self._lengths, self._documents):
                handle.close()
            self._write_index()
            if not replace and (os.path.exists(bin_path(self.prefix)) or os.path.exists(idx_path(self.prefix))):
                raise InputError(f"{self.prefix}.bin/.idx appeared while this run was writing them (another run on "
                                 "the same output?): they are kept, and nothing of this run was published. Run again "
                                 "with --overwrite, or choose another output.")
            remove_quietly(meta_path(self.prefix))
            publish_pair((self._bin_temp, self._idx_temp), (bin_path(self.prefix), idx_path(self.prefix)))
            if meta is not None:
                counts = {"documents": self.document_count, "sequences": self.sequence_count, "tokens": self.token_count}
                atomic_write_text(meta_path(self.prefix), json.dumps({**counts, **meta}, indent=1) + "\n")
        finally:
            self.abort()

    def abort(self) -> None:
        """Close and delete the temporary files (the final names are never touched).

        Closing flushes what is buffered and can fail again as the write did (a full disk: ENOSPC); the files
        are discarded anyway, so such an error is dropped and every file is still removed."""
        self._done = True
        try:
            for handle in (self._bin, self._lengths, self._documents):
                if handle is not None:  # None: __init__ failed before opening it
                    with contextlib.suppress(OSError):
                        handle.close()
        finally:
            remove_quietly(self._bin_temp, self._idx_temp, self._lengths_temp, self._documents_temp)

    def _write_index(self) -> None:
        """Header, lengths, byte pointers, document indices: each streamed from the spill files a
        chunk at a time (read, not mapped, so no index page lingers in the process's memory)."""
        itemsize = self.dtype.itemsize
        with open(self._idx_temp, "wb", buffering=1 << 20) as out:
            out.write(_HEADER.pack(MAGIC, VERSION, _CODE_OF[self.dtype], self.sequence_count, self.document_count + 1))
            with open(self._lengths_temp, "rb") as lengths:
                shutil.copyfileobj(lengths, out, 1 << 24)
            offset = 0
            for lengths_chunk in _read_chunks(self._lengths_temp, np.int32):
                ends = np.cumsum(lengths_chunk, dtype=np.int64)
                ends *= itemsize
                ends += offset
                offset = int(ends[-1])
                ends -= lengths_chunk.astype(np.int64) * itemsize  # the start of each sequence
                out.write(ends.data)
            out.write(np.zeros(1, np.int64).data)
            with open(self._documents_temp, "rb") as documents:
                shutil.copyfileobj(documents, out, 1 << 24)


def _read_chunks(path: str, dtype: type) -> Iterator[np.ndarray]:
    """The array stored in ``path``, ``_CHUNK`` entries at a time."""
    with open(path, "rb") as handle:
        while True:
            chunk = np.fromfile(handle, dtype, _CHUNK)
            if not len(chunk):
                return
            yield chunk


class DataFileError(RuntimeError):
    """A dataset file could not be read while training (truncated, replaced, an I/O error)."""


class IndexedDataset:
    """Read-only access to a ``.bin``/``.idx`` pair: the index as numpy memmaps, tokens read with
    ``os.pread`` exactly where asked.

    Opening checks the header and both file sizes and says what is wrong and what to do. Tokens are
    read, not mapped: a ``.bin`` that is truncated or fails while in use (a network file system, a disk
    error) raises DataFileError naming the file, where a memory map would kill the process with SIGBUS.
    Each read also checks the open file's size and modification time (one ``fstat``): a ``.bin``
    overwritten in place would otherwise hand out other tokens without a sign. A ``.bin`` deleted or
    replaced by a rename keeps being read as opened (``changed_on_disk`` says so).
    Pickles by prefix (DataLoader workers reopen the files instead of copying them).
    """

    def __init__(self, prefix: str | os.PathLike) -> None:
        self.prefix = str(prefix)
        self._open()

    def __getstate__(self) -> dict:
        return {"prefix": self.prefix}

    def __setstate__(self, state: dict) -> None:
        self.prefix = state["prefix"]
        self._open()

    def _open(self) -> None:
        index_file, data_file = idx_path(self.prefix), bin_path(self.prefix)
        for path in (index_file, data_file):
            if not os.path.exists(path):
                raise IndexFormatError(_missing_message(path))
        idx_size = os.path.getsize(index_file)
        with open(index_file, "rb") as handle:
            raw = handle.read(_HEADER.size)
        if len(raw) < _HEADER.size or not raw.startswith(MAGIC):
            raise IndexFormatError(
                f"{index_file} is not a Megatron-style indexed dataset index (the file must start with "
                f"{MAGIC!r}); it may be an older 'lazy'/'cached' Megatron format or another file. "
                "Re-create it with tools/preprocess_data.py."
            )
        _, version, code, sequences, documents = _HEADER.unpack(raw)
        if version != VERSION:
            raise IndexFormatError(f"{index_file} has format version {version}; this reader knows version {VERSION}.")
        if code not in DTYPE_CODES:
            raise IndexFormatError(f"{index_file} has unknown token dtype code {code}; the file is damaged.")
        self.dtype = np.dtype(DTYPE_CODES[code])
        expected = _HEADER.size + sequences * (4 + 8) + documents * 8
        if idx_size not in (expected, expected + sequences):  # + int8 modes: megatron's multimodal variant
            raise IndexFormatError(
                f"{index_file} is {idx_size} bytes but its header announces {sequences} sequences and "
                f"{documents - 1} documents ({expected} bytes): the file is truncated or damaged. "
                "Re-run preprocessing for this prefix."
            )
        offset = _HEADER.size
        self.sequence_lengths = _memmap(index_file, np.int32, offset, sequences)
        offset += sequences * 4
        self.sequence_pointers = _memmap(index_file, np.int64, offset, sequences)
        offset += sequences * 8
        self.document_indices = _memmap(index_file, np.int64, offset, documents)
        fd = os.open(data_file, os.O_RDONLY)
        opened = os.fstat(fd)
        bin_size = opened.st_size
        want = int(self.sequence_pointers[-1]) + int(self.sequence_lengths[-1]) * self.dtype.itemsize if sequences else 0
        if bin_size != want:
            os.close(fd)
            raise IndexFormatError(
                f"{data_file} is {bin_size} bytes but {index_file} describes {want} bytes of tokens: the .bin "
                "is truncated or belongs to another index. Re-run preprocessing for this prefix."
            )
        self._bin_path, self._bin_size, self._bin_mtime = data_file, bin_size, opened.st_mtime_ns
        self._fd = fd

    def __del__(self) -> None:
        fd = getattr(self, "_fd", None)
        if fd is not None:
            os.close(fd)
            self._fd = None

    def _read(self, start: int, count: int) -> np.ndarray:
        """``count`` tokens from token ``start`` of the .bin."""
        itemsize = self.dtype.itemsize
        if count <= 0:
            return np.empty(0, self.dtype)
        offset, size = start * itemsize, count * itemsize
        try:
            data = os.pread(self._fd, size, offset)
            # after the read: a write into the file that overlaps it has already moved the modification time
            now = os.fstat(self._fd)
        except OSError as exc:
            raise DataFileError(f"{self._bin_path}: reading {size:,} bytes at byte {offset:,} failed ({exc.strerror or exc})."
                                f" {_RELAUNCH}") from None
        if len(data) != size or now.st_size != self._bin_size or now.st_mtime_ns != self._bin_mtime:
            raise DataFileError(
                f"{self._bin_path} changed while this run read it (now {now.st_size:,} bytes, modified at "
                f"{_clock(now.st_mtime_ns)}; opened at {self._bin_size:,} bytes, modified at {_clock(self._bin_mtime)}): "
                f"it was truncated or overwritten. {_RELAUNCH}")
        return np.frombuffer(data, self.dtype)

    def changed_on_disk(self) -> str | None:
        """What happened to the .bin since it was opened (deleted, replaced, resized), or None. This run
        keeps reading what it opened; a relaunch would not find it."""
        try:
            now = os.stat(self._bin_path)
        except FileNotFoundError:
            return f"{self._bin_path} was deleted"
        opened = os.fstat(self._fd)
        if (now.st_ino, now.st_dev) != (opened.st_ino, opened.st_dev):
            return f"{self._bin_path} was replaced by another file"
        if now.st_size != self._bin_size:
            return f"{self._bin_path} is now {now.st_size:,} bytes, not {self._bin_size:,}"
        return None

    # sizes -------------------------------------------------------------------------------------
    @property
    def num_sequences(self) -> int:
        return len(self.sequence_lengths)

    @property
    def num_documents(self) -> int:
        return len(self.document_indices) - 1

    @property
    def num_tokens(self) -> int:
        return self._bin_size // self.dtype.itemsize

    def __len__(self) -> int:
        return self.num_sequences

    # access ------------------------------------------------------------------------------------
    def __getitem__(self, sequence: int) -> np.ndarray:
        return self.get(sequence)

    def get(self, sequence: int, offset: int = 0, length: int | None = None) -> np.ndarray:
        """Tokens of one sequence (or a slice of it)."""
        start = int(self.sequence_pointers[sequence]) // self.dtype.itemsize + offset
        size = int(self.sequence_lengths[sequence]) - offset if length is None else length
        return self._read(start, size)

    def document(self, document: int, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Tokens ``start:stop`` of one document (its sequences are contiguous in the .bin); only those
        are read."""
        first, last = int(self.document_indices[document]), int(self.document_indices[document + 1])
        if first == last:
            return np.empty(0, self.dtype)
        begin = int(self.sequence_pointers[first]) // self.dtype.itemsize
        end = int(self.sequence_pointers[last - 1]) // self.dtype.itemsize + int(self.sequence_lengths[last - 1])
        stop = end - begin if stop is None else min(stop, end - begin)
        return self._read(begin + start, stop - start)

    def document_sequences(self, document: int) -> range:
        """Indices of the sequences (sentences) of one document."""
        return range(int(self.document_indices[document]), int(self.document_indices[document + 1]))

    def tokens(self, start: int, stop: int) -> np.ndarray:
        """A range of the whole token stream, across sequence and document boundaries."""
        return self._read(start, min(stop, self.num_tokens) - start)

    def document_lengths(self) -> np.ndarray:
        """Tokens per document (vectorized over the index)."""
        per_sequence = np.concatenate([[0], np.cumsum(self.sequence_lengths, dtype=np.int64)])
        return np.diff(per_sequence[self.document_indices])

    def last_tokens(self, documents: range) -> np.ndarray:
        """The last token of each of ``documents`` (-1 for an empty one), read through a map of the .bin."""
        offsets = self.document_token_offsets()[documents.start : documents.stop + 1]
        ends, empty = offsets[1:] - 1, offsets[1:] == offsets[:-1]
        if self.num_tokens == 0:
            return np.full(len(documents), -1, dtype=np.int64)
        stream = _memmap(self._bin_path, self.dtype, 0, self.num_tokens)
        return np.where(empty, -1, stream[np.where(empty, 0, ends)].astype(np.int64))

    def document_token_offsets(self) -> np.ndarray:
        """Start token of each document in the stream, plus the total at the end (length D+1)."""
        per_sequence = np.concatenate([[0], np.cumsum(self.sequence_lengths, dtype=np.int64)])
        return per_sequence[self.document_indices]


def _clock(nanoseconds: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(nanoseconds / 1e9))


_RELAUNCH = ("Restore the file (or preprocess again to a new prefix and point data.prefixes at it), then relaunch: "
             "the run resumes from its last checkpoint.")


def _memmap(path: str, dtype: type, offset: int, count: int) -> np.ndarray:
    """A read-only map of the file as a plain ndarray: slicing an ``np.memmap`` subclass costs
    microseconds per call in ``__array_finalize__``, which adds up over millions of sample fetches."""
    if count == 0:
        return np.empty(0, dtype)
    return np.memmap(path, dtype, "r", offset=offset, shape=(count,)).view(np.ndarray)


def leftovers(prefix: str | os.PathLike) -> list[str]:
    """Temporary files of a dataset's writer under ``prefix`` (``PREFIX.bin.tmp-PID`` and the rest): a run killed
    with SIGKILL or a lost node leaves them, and nothing else removes them."""
    return sorted(path for suffix in (".bin", ".idx", ".lengths", ".documents", ".meta.json")
                  for path in glob.glob(glob.escape(f"{prefix}{suffix}") + ".tmp-*"))


def _missing_message(path: str) -> str:
    leftovers = glob.glob(glob.escape(path) + ".tmp-*")
    if leftovers:
        return (
            f"{path} does not exist, but {Path(leftovers[0]).name} does: the preprocessing run that "
            "wrote it was interrupted. Delete the .tmp-* files and run tools/preprocess_data.py again."
        )
    return f"{path} does not exist: check the prefix (it names files PREFIX.bin and PREFIX.idx) or run tools/preprocess_data.py."
