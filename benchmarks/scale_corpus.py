"""A Korean + German corpus of any size for benchmarks/scale.py, grown from ../shared/corpora, with a known
share of planted duplicates and a record of each one.

Distinct documents are lines drawn without replacement from the language's pool of distinct lines (31k
Korean, 115k German lines of real documentation and quotations), 5 to 30 of them, in random order:
documents that differ like real ones (no two share more than a few lines, lengths and languages mixed,
some fail the length, script or repetition rules as real text does). After them, at random:
  exact   (--exact-share, default 5%) a copy of an earlier distinct document, half of them verbatim and
          half with spaces doubled and a trailing newline (the same text once whitespace is collapsed);
  near    (--near-share, default 5%) a copy with one word in 20 (at least one) replaced by its neighbour,
          its true Jaccard similarity (character 5-grams, as dedup compares) recorded.
Originals are drawn from a reservoir sample of every earlier distinct document, so a copy and its original
are often far apart (other parts). The corpus is written as parts of --part-mb MB of text
(``part-00000.jsonl`` ...); sizes are prefixes of the parts. Beside each part, ``part-NNNNN.truth.npy``:
per document its kind (0 distinct, 1 exact, 2 near), the global index of its original (-1) and the
Jaccard similarity to it.
"""

from __future__ import annotations

import json
import random
import zlib
from pathlib import Path

import numpy as np

DISTINCT, EXACT, NEAR = 0, 1, 2
TRUTH = np.dtype([("kind", np.uint8), ("original", np.int64), ("jaccard", np.float32)])


def line_pools(corpora: Path) -> dict[str, list[str]]:
    """The distinct non-empty lines of the shared corpora by language (ko, de), in a fixed order."""
    import zstandard

    pools: dict[str, set[str]] = {"ko": set(), "de": set()}
    for file in sorted(corpora.glob("*.jsonl.zst")):
        language = file.name.split(".")[0]
        with zstandard.open(file, "rt", encoding="utf-8") as handle:
            for line in handle:
                pools[language].update(s.strip() for s in json.loads(line)["text"].split("\n") if s.strip())
    # a total order: lines whose CRC-32 collide (the German pool has two such pairs) would otherwise keep the
    # set's order, which changes with PYTHONHASHSEED, and a corpus grown in a later process would differ
    return {language: sorted(lines, key=lambda s: (zlib.crc32(s.encode("utf-8")), s)) for language, lines in pools.items()}


def edited(text: str, rng: random.Random) -> str:
    """A near copy: one word in 20 (at least one) replaced by its neighbour, as a re-crawled page differs."""
    words = text.split(" ")
    for _ in range(max(1, len(words) // 20)):
        i = rng.randrange(len(words))
        words[i] = words[(i + 1) % len(words)]
    return " ".join(words)


def respaced(text: str) -> str:
    """The same text once whitespace is collapsed (what exact dedup compares), other bytes."""
    return text.replace(" ", "  ") + "\n"


def jaccard(a: str, b: str) -> float:
    from pretrain.corpus.cleaning.dedup import shingle_hashes

    x, y = shingle_hashes(a), shingle_hashes(b)
    union = len(np.union1d(x, y))
    return len(np.intersect1d(x, y, assume_unique=True)) / union if union else 1.0


class Grower:
    """Writes the corpus part by part; the state (random generators, reservoir) carries over between parts."""

    def __init__(self, corpora: Path, exact_share: float, near_share: float, seed: int = 0) -> None:
        self.pools = line_pools(corpora)
        self.exact_share, self.near_share = exact_share, near_share
        self.rng = random.Random(seed)
        self.reservoir: list[tuple[int, str]] = []
        self.distinct_seen = 0
        self.index = 0

    def distinct(self) -> str:
        pool = self.pools["ko" if self.rng.random() < 0.5 else "de"]
        return "\n".join(self.rng.sample(pool, self.rng.randint(5, 30)))

    def document(self) -> tuple[str, int, int, float]:
        """(text, kind, original, jaccard) of the next document."""
        roll = self.rng.random()
        if self.reservoir and roll < self.exact_share:
            original, text = self.rng.choice(self.reservoir)
            return (text if self.rng.random() < 0.5 else respaced(text)), EXACT, original, 1.0
        if self.reservoir and roll < self.exact_share + self.near_share:
            original, text = self.rng.choice(self.reservoir)
            copy = edited(text, self.rng)
            return copy, NEAR, original, jaccard(text, copy)
        text = self.distinct()
        self.distinct_seen += 1
        if len(self.reservoir) < 20_000:  # Algorithm R: every earlier distinct document equally likely
            self.reservoir.append((self.index, text))
        else:
            slot = self.rng.randrange(self.distinct_seen)
            if slot < len(self.reservoir):
                self.reservoir[slot] = (self.index, text)
        return text, DISTINCT, -1, 0.0

    def write_part(self, path: Path, text_bytes: int) -> tuple[int, int]:
        """Write documents to ``path`` until ``text_bytes`` of text; (documents, bytes of text)."""
        truth, written = [], 0
        temp = path.with_name(path.name + ".tmp")
        with open(temp, "w", encoding="utf-8") as handle:
            while written < text_bytes:
                text, kind, original, similarity = self.document()
                handle.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
                truth.append((kind, original, similarity))
                written += len(text.encode("utf-8"))
                self.index += 1
        np.save(truth_path(path), np.array(truth, dtype=TRUTH))
        temp.rename(path)  # last: a part without its truth file is never taken as complete
        return len(truth), written


def truth_path(part: Path) -> Path:
    return part.with_name(part.name.replace(".jsonl", ".truth.npy"))


def build(folder: Path, size_gb: float, part_mb: float, corpora: Path, exact_share: float,
          near_share: float) -> list[dict]:
    """Parts covering ``size_gb`` GB of text in ``folder`` (reused when already there, with the same
    settings); returns each part's {path, documents, bytes}."""
    folder.mkdir(parents=True, exist_ok=True)
    settings = {"part_mb": part_mb, "exact_share": exact_share, "near_share": near_share, "corpora": str(corpora)}
    meta_file = folder / "corpus.json"
    meta = json.loads(meta_file.read_text()) if meta_file.exists() else {"settings": settings, "parts": []}
    if meta["settings"] != settings:
        raise SystemExit(f"{folder} holds a corpus made with {meta['settings']}: remove it or choose another --workdir")
    needed = int(np.ceil(size_gb * 1000 / part_mb - 1e-9))
    if len(meta["parts"]) < needed:
        grower = Grower(corpora, exact_share, near_share)
        for part in meta["parts"]:  # regrow the state of the parts already written (the generator is deterministic)
            documents, _ = grower.write_part(folder / "regrow.jsonl", int(part_mb * 1e6))
            if documents != part["documents"]:  # a later part's copies would point at other documents
                raise SystemExit(f"{part['path']} holds {part['documents']:,} documents but the generator regrows "
                                 f"{documents:,}: the corpus was grown by another version of this script; remove "
                                 f"{folder} and grow it again")
        (folder / "regrow.jsonl").unlink(missing_ok=True)
        truth_path(folder / "regrow.jsonl").unlink(missing_ok=True)
        while len(meta["parts"]) < needed:
            path = folder / f"part-{len(meta['parts']):05d}.jsonl"
            documents, text_bytes = grower.write_part(path, int(part_mb * 1e6))
            meta["parts"].append({"path": str(path), "documents": documents, "bytes": text_bytes})
            meta_file.write_text(json.dumps(meta, indent=1))
            print(f"  corpus part {path.name}: {documents:,} documents, {text_bytes / 1e6:,.0f} MB of text", flush=True)
    return meta["parts"][:needed]
