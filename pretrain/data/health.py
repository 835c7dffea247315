"""Dataset files while a run reads them: a worker's read error turned into one clear message, and files
that were deleted, replaced or resized under the run found before a relaunch trips over them."""

from __future__ import annotations

from collections.abc import Iterator

from pretrain.data.indexed import DataFileError, IndexedDataset


def indexed_datasets(dataset) -> list[IndexedDataset]:
    """The indexed files behind a (blended) GPT or MLM dataset."""
    if isinstance(dataset, IndexedDataset):
        return [dataset]
    if hasattr(dataset, "datasets"):
        return [found for part in dataset.datasets for found in indexed_datasets(part)]
    return indexed_datasets(dataset.indexed) if hasattr(dataset, "indexed") else []


def changed_files(datasets: list) -> list[str]:
    """What happened to each dataset file since the run opened it (one line each, none if nothing)."""
    return [change for dataset in datasets for indexed in indexed_datasets(dataset)
            if (change := indexed.changed_on_disk())]


def next_batch(batches: Iterator, datasets: list):
    """``next(batches)``, with a DataLoader worker's failure said in one line that names the file."""
    try:
        return next(batches)
    except DataFileError as exc:  # raised in a worker: DataLoader wraps the message in the worker's traceback
        raise DataFileError(_last_line(str(exc))) from None
    except RuntimeError as exc:
        if "DataLoader worker" not in str(exc):
            raise
        changes = changed_files(datasets)
        cause = "; ".join(changes) if changes else "no dataset file looks changed (out of memory? see dmesg)"
        raise DataFileError(f"a data loader worker died ({_last_line(str(exc))}): {cause}. Restore the files, then "
                            "relaunch: the run resumes from its last checkpoint.") from None


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    last = lines[-1] if lines else text
    return last.split("DataFileError: ", 1)[-1].strip()
