"""Exact and near-duplicate removal, decided over the whole corpus (all shards, in input order): the
first copy is kept, later copies go.

Exact: a 64-bit hash of the text normalized for comparison (NFC, case-folded, whitespace collapsed).

Near: MinHash over character 5-grams (word shingles fail for Korean, whose eojeols carry particles:
학교에, 학교는 and 학교를 share no word), with locality-sensitive hashing to find candidates.
Signatures come from datasketch's ``MinHash`` (128 permutations, seed 1); the 5-gram shingles are
hashed vectorized in numpy (a polynomial hash over code points with a 64-bit finalizer), not one
Python call per shingle. The bands and rows are datasketch's optimum for the threshold with missed
duplicates weighted 9 to 1 against spurious candidates (Jaccard 0.8 by default: 14 bands of 9 rows for
128 permutations; a pair at Jaccard 0.85 becomes a candidate 97.5% of the time), since every candidate
is then checked: it counts only where the signatures' estimated Jaccard similarity reaches the
threshold. Candidates are found by sorting each band's hashes (8 bytes per band per document, instead
of an in-memory dictionary per bucket, as datatrove's bucket stage does) and merged into clusters; each
cluster keeps its first document.

Memory: the filter stage appends hashes, band hashes and signatures to files as it goes (its memory
is flat); the dedup stage holds the exact hashes and works on one band at a time: about 64 bytes per
document (hash, union-find parents, the candidates, one band's hashes and their sort order), with
8 + 8 x bands (120) + 4 x 128 (512) bytes per document on disk (signatures read back by memory map for
the candidate pairs only).
"""

from __future__ import annotations

import hashlib
import os
import unicodedata
from dataclasses import dataclass

import numpy as np

NUM_PERM = 128
SHINGLE = 5
THRESHOLD = 0.8
SEED = 1
_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


@dataclass(frozen=True)
class NearDupSettings:
    threshold: float = THRESHOLD
    shingle: int = SHINGLE
    num_perm: int = NUM_PERM

    @property
    def bands(self) -> tuple[int, int]:
        """(bands, rows per band): datasketch's optimum for the threshold, missed duplicates weighted 9 to 1
        against spurious candidates (which the signature check removes)."""
        from datasketch.lsh import _optimal_param

        return _optimal_param(self.threshold, self.num_perm, 0.1, 0.9)


def comparable(text: str) -> str:
    """The text as duplicates are compared: NFC, case-folded, whitespace collapsed."""
    return " ".join(unicodedata.normalize("NFC", text).casefold().split())


def exact_hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(comparable(text).encode("utf-8"), digest_size=8).digest(), "little")


def _fmix64(values: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finalizer: every input bit reaches every output bit."""
    with np.errstate(over="ignore"):
        values = values ^ (values >> np.uint64(33))
        values = values * np.uint64(0xFF51AFD7ED558CCD)
        values = values ^ (values >> np.uint64(33))
        values = values * np.uint64(0xC4CEB9FE1A85EC53)
        return values ^ (values >> np.uint64(33))


def shingle_hashes(text: str, size: int = SHINGLE) -> np.ndarray:
    """32-bit hashes of the distinct character ``size``-grams of the comparable text."""
    codes = np.frombuffer(comparable(text).encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    if len(codes) < size:
        codes = np.pad(codes, (0, size - len(codes)))
    windows = np.lib.stride_tricks.sliding_window_view(codes, size)
    with np.errstate(over="ignore"):
        combined = windows[:, 0].copy()
        for column in range(1, size):
            combined = combined * np.uint64(1_000_003) + windows[:, column]
    return np.unique(_fmix64(combined) & np.uint64(0xFFFFFFFF))


class Signer:
    """MinHash signatures (uint32, ``num_perm`` values) of documents, with datasketch's permutations."""

    def __init__(self, settings: NearDupSettings) -> None:
        from datasketch import MinHash

        self.settings = settings
        self._MinHash = MinHash
        reference = MinHash(num_perm=settings.num_perm, seed=SEED)
        self._permutations, self._scheme = reference.permutations, reference.scheme

    def __call__(self, text: str) -> np.ndarray:
        signature = self._MinHash(num_perm=self.settings.num_perm, seed=SEED, hashfunc=int,
                                  permutations=self._permutations, scheme=self._scheme)
        signature.update_batch(shingle_hashes(text, self.settings.shingle).tolist())
        return signature.hashvalues.astype(np.uint32)


def band_hashes(signatures: np.ndarray, settings: NearDupSettings) -> np.ndarray:
    """[documents, bands] 64-bit hashes of each band's rows."""
    bands, rows = settings.bands
    out = np.zeros((len(signatures), bands), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for band in range(bands):
            block = signatures[:, band * rows : (band + 1) * rows].astype(np.uint64)
            value = np.full(len(signatures), np.uint64(band), dtype=np.uint64)
            for column in range(rows):
                value = _fmix64(value * np.uint64(0x9E3779B97F4A7C15) + block[:, column])
            out[:, band] = value
    return out


def first_of_each_exact(hashes: np.ndarray) -> np.ndarray:
    """Boolean mask: True for the first document with each hash (in input order)."""
    keep = np.zeros(len(hashes), dtype=bool)
    if len(hashes):
        _, first = np.unique(hashes, return_index=True)
        keep[first] = True
    return keep


def near_duplicates(band_columns, signatures: np.ndarray, candidates: np.ndarray, threshold: float) -> np.ndarray:
    """Boolean mask over documents: True where a document is a near duplicate of an earlier one.

    ``band_columns[b]`` is band ``b``'s hash of every document (``bands.T`` of an in-memory array, or
    ``BandColumns`` reading one band at a time from the stage files, so that only one band is in memory);
    ``candidates`` marks the documents taking part (those that survived exact dedup and the rules);
    ``signatures`` may be a memory map: only candidate pairs are read."""
    count = len(candidates)
    parent = np.arange(count)

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    members = np.flatnonzero(candidates)
    for band in range(len(band_columns)):
        values = band_columns[band][members]
        order = np.argsort(values, kind="stable")  # equal hashes stay in input order
        sorted_values = values[order]
        starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
        sizes = np.diff(np.r_[starts, len(order)])
        for start, size in zip(starts[sizes > 1], sizes[sizes > 1]):
            group = members[order[start : start + size]]
            first = group[0]
            for other in group[1:]:
                a, b = root(first), root(other)
                if a == b:
                    continue
                if np.mean(signatures[first] == signatures[other]) >= threshold:
                    parent[max(a, b)] = min(a, b)  # the cluster's root is its earliest document
    roots = np.fromiter((root(i) for i in range(count)), np.int64, count)
    return candidates & (roots != np.arange(count))


class BandColumns:
    """The band hashes of several stage files (row-major ``[documents, bands]`` uint64), one band at a
    time: a band is read in blocks of rows, so memory holds 8 bytes per document, not 8 x bands."""

    BLOCK_ROWS = 1 << 16

    def __init__(self, files: list[str], num_bands: int) -> None:
        self.files, self.num_bands = files, num_bands
        self.count = sum(os.path.getsize(f) // (8 * num_bands) for f in files)

    def __len__(self) -> int:
        return self.num_bands

    def __getitem__(self, band: int) -> np.ndarray:
        column, at = np.empty(self.count, dtype=np.uint64), 0
        for file in self.files:
            with open(file, "rb") as handle:
                while (block := np.fromfile(handle, np.uint64, self.BLOCK_ROWS * self.num_bands)).size:
                    rows = block.reshape(-1, self.num_bands)
                    column[at : at + len(rows)] = rows[:, band]
                    at += len(rows)
        return column
