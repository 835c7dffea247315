"""Parquet files and ``datasets`` folders (Arrow streams) as chunks of rows, for preprocessing.

A shard takes the row groups (parquet) or record batches (arrow) whose start falls in its byte
range of the file, so shards never overlap and together cover every row.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

from pretrain.corpus.types import Chunk, InputError, InputFile

T = TypeVar("T")


def table_chunks(file: InputFile, start: int, end: int, chunk_bytes: int, keys: Sequence[str],
                 damaged: Callable[[str], None] | None = None) -> Iterator[Chunk]:
    """Chunks of the row groups (record batches) whose start falls in ``[start, end)``. A row group that cannot be
    read stops the run (InputError naming the file and the rows), or, given ``damaged``, is left out and said to
    it ("FILE, rows A-B left out: ..."), and the run goes on with the next (a parquet file's footer says where
    each starts)."""
    names, loaders, weights, counts = _readable(file, "opening it", lambda: table_batches(file, keys))
    missing = [key for key in keys if key not in names]
    if missing:
        raise InputError(
            f"{file.path} has no column {missing[0]!r} (columns: {', '.join(names)}); choose columns with --json-keys."
        )
    total = sum(weights) or 1
    row, seen = 1, 0
    for load, weight, count in zip(loaders, weights, counts):
        begin = file.size * seen // total
        seen += weight
        if start <= begin < end and count:  # another shard's row groups are not even read
            try:
                batch = _readable(file, f"rows {row:,}-{row + count - 1:,}", load)
            except InputError as exc:
                if damaged is None:
                    raise
                damaged(f"{file.path}, rows {row:,}-{row + count - 1:,} left out: {str(exc).removeprefix(f'{file.path}: ')}")
                row += count
                continue
            share = file.size * seen // total - begin
            rows_per_chunk = max(1, int(batch.num_rows * chunk_bytes / max(batch.nbytes, 1)))
            for offset in range(0, batch.num_rows, rows_per_chunk):
                piece = batch.slice(offset, rows_per_chunk)
                yield Chunk(file.path, row + offset, "table", piece, share * piece.num_rows // batch.num_rows)
        row += count


def _readable(file: InputFile, where: str, read: Callable[[], T]) -> T:
    """``read()``, with pyarrow's errors for a damaged or truncated file (deep in its C++) said as bad input."""
    import pyarrow as pa

    try:
        return read()
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"{file.path}: the {file.format} file is damaged or truncated ({where}: {str(exc).rstrip('.')}). "
                         "Re-download or rewrite it.") from None


def table_batches(file: InputFile, keys: Sequence[str]):
    """Column names, lazy loaders of record batches holding ``keys``, the batches' weights and their rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if file.format == "parquet":
        parquet = pq.ParquetFile(file.path)
        meta, names = parquet.metadata, parquet.schema_arrow.names
        columns = [key for key in keys if key in names]

        def load(group: int) -> pa.RecordBatch:
            table = parquet.read_row_group(group, columns=columns).combine_chunks()
            return pa.RecordBatch.from_arrays([table.column(k).chunk(0) if table.num_rows else
                                               pa.array([], table.schema.field(k).type) for k in columns], names=columns)

        weights = [sum(meta.row_group(g).column(c).total_compressed_size for c in range(meta.num_columns))
                   for g in range(meta.num_row_groups)]
        return (names, [lambda g=g: load(g) for g in range(meta.num_row_groups)], weights,
                [meta.row_group(g).num_rows for g in range(meta.num_row_groups)])
    source = pa.memory_map(file.path)
    try:
        batches = list(pa.ipc.open_stream(source))
    except pa.ArrowInvalid:
        reader = pa.ipc.open_file(source)
        batches = [reader.get_batch(i) for i in range(reader.num_record_batches)]
    names = batches[0].schema.names if batches else []
    columns = [key for key in keys if key in names]
    selected = [pa.RecordBatch.from_arrays([b.column(k) for k in columns], names=columns) for b in batches]
    return names, [lambda b=b: b for b in selected], [b.nbytes for b in batches], [b.num_rows for b in batches]
