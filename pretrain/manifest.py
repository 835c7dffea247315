"""Checkpoint manifests: the size and checksum of every file, recorded before ``COMPLETE`` is written
and checked before a checkpoint is trusted.

``COMPLETE`` says that every rank finished writing; the manifest says that what is on disk now is
what was written then (a bad copy, a disk error or a truncated transfer after the fact shows up as a
wrong size or checksum, not as torch's ``PytorchStreamReader failed reading zip archive``). The
checksum is xxHash's XXH3-64, which runs at memory speed (several GB/s per core), so hashing costs
about as much as reading the files once; the ranks share the work, each hashing every N-th file.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

MANIFEST = "MANIFEST.json"
ALGORITHM = "xxh3_64"
_BLOCK = 8 << 20
_NOT_LISTED = {MANIFEST, "COMPLETE"}


@dataclass(frozen=True)
class FileRecord:
    bytes: int
    checksum: str


def checksum(path: str | os.PathLike) -> str:
    import xxhash

    digest = xxhash.xxh3_64()
    with open(path, "rb") as handle:
        while block := handle.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def files_of(folder: Path) -> list[str]:
    """Every file of a checkpoint folder, relative and sorted (the manifest and COMPLETE aside)."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and p.name not in _NOT_LISTED
                  and ".tmp-" not in p.name)


def describe(folder: Path, names: list[str]) -> dict[str, FileRecord]:
    return {name: FileRecord((folder / name).stat().st_size, checksum(folder / name)) for name in names}


def write(folder: Path, records: dict[str, FileRecord]) -> None:
    from pretrain.atomic import atomic_write_text

    body = {"algorithm": ALGORITHM, "files": {name: {"bytes": r.bytes, ALGORITHM: r.checksum}
                                              for name, r in sorted(records.items())}}
    atomic_write_text(folder / MANIFEST, json.dumps(body, indent=1) + "\n")


def read(folder: Path) -> dict[str, FileRecord] | None:
    """The manifest's records; None for a checkpoint saved before manifests existed."""
    path = folder / MANIFEST
    if not path.exists():
        return None
    try:
        body = json.loads(path.read_text())
        return {name: FileRecord(int(entry["bytes"]), str(entry[body["algorithm"]]))
                for name, entry in body["files"].items()}
    except (ValueError, KeyError, TypeError) as exc:
        raise ManifestError(f"{path} is unreadable ({exc})") from None


class ManifestError(ValueError):
    """The manifest itself is damaged."""


def problems(folder: Path, records: dict[str, FileRecord], names: list[str] | None = None) -> list[str]:
    """What is wrong with the files ``names`` (default: all) against their records, one line each."""
    found = []
    for name in sorted(records) if names is None else names:
        want, path = records[name], folder / name
        try:
            size = path.stat().st_size
            if size != want.bytes:
                found.append(f"{path}: {size:,} bytes, the manifest says {want.bytes:,} (truncated or replaced)")
            elif checksum(path) != want.checksum:
                found.append(f"{path}: checksum differs from the manifest (the file was damaged after it was saved)")
        except FileNotFoundError:
            found.append(f"{path}: missing")
        except OSError as exc:
            found.append(f"{path}: unreadable ({exc.strerror or exc})")
    return found


def share(names: list[str], rank: int, world_size: int) -> list[str]:
    """This rank's part of the hashing: every ``world_size``-th file from the ``rank``-th."""
    return names[rank::world_size]


def verify(folder: Path, rank: int = 0, world_size: int = 1) -> list[str] | None:
    """This rank's share of the problems of ``folder`` (None: no manifest, saved by an older version)."""
    try:
        records = read(folder)
    except ManifestError as exc:
        return [str(exc)] if rank == 0 else []
    if records is None:
        return None
    return problems(folder, records, share(sorted(records), rank, world_size))
