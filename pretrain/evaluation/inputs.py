"""What ``pretrain-eval`` scores: the documents of text/jsonl (any format the corpus readers take) or
of ``.bin/.idx`` prefixes, streamed one by one (memory stays flat however large the input).

A document arrives as its text (files) or as its token ids (prefixes, the trailing end-of-document
token removed: it marks the boundary, it is not text). Bad records stop the run with the file, the
line and the fix, as in preprocessing.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from pretrain.corpus import sources
from pretrain.corpus.json_path import parse_path
from pretrain.corpus.parsing import parse_chunk
from pretrain.corpus.types import InputError
from pretrain.data.indexed import IndexedDataset, dataset_exists

CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class EvalInput:
    spec: str  # as given on the command line
    kind: str  # "files" or "prefix"
    prefix: str | None = None


@dataclass(frozen=True)
class ReadOptions:
    json_keys: tuple[str, ...] = ("text",)
    text_mode: str = "line"
    input_format: str | None = None
    json_path: str | None = None


def resolve(specs: Sequence[str]) -> list[EvalInput]:
    """Each ``--input``: a dataset prefix (``PREFIX``, ``PREFIX.bin`` or ``PREFIX.idx``) or files (paths,
    globs, folders). Raises InputError naming the first that is neither."""
    found = []
    for spec in specs:
        prefix = str(spec).removesuffix(".bin").removesuffix(".idx")
        if dataset_exists(prefix):
            IndexedDataset(prefix)  # raises IndexFormatError naming the missing or damaged file and the fix
            found.append(EvalInput(str(spec), "prefix", prefix))
            continue
        sources.resolve_inputs([str(spec)])  # raises InputError: no such file, a glob that matches nothing
        found.append(EvalInput(str(spec), "files"))
    return found


def texts(spec: str, options: ReadOptions, limit: int | None = None) -> Iterator[str]:
    """The documents of the files ``spec`` names, in order (each ``--json-keys`` value is one)."""
    path = parse_path(options.json_path) if options.json_path else None
    count = 0
    for file in sources.resolve_inputs([spec], options.input_format):
        for chunk in sources.read_chunks(file, 0, file.size, options.text_mode, CHUNK_BYTES, list(options.json_keys),
                                         path):
            parsed = parse_chunk(chunk, list(options.json_keys), path)
            if parsed.problems:
                raise InputError(str(parsed.problems[0]))
            for index in range(len(parsed.lines)):
                for key in options.json_keys:
                    if limit is not None and count >= limit:
                        return
                    count += 1
                    yield parsed.texts[key][index]


def token_documents(prefix: str, end_of_document: int | None, vocab_size: int,
                    limit: int | None = None) -> Iterator[np.ndarray]:
    """The documents of ``PREFIX.bin/.idx`` as int64 ids, without their end-of-document token. Raises
    InputError when an id is beyond ``vocab_size``, the ids the model and its tokenizer both know (the data was made
    with another tokenizer)."""
    indexed = IndexedDataset(prefix)
    count = indexed.num_documents if limit is None else min(limit, indexed.num_documents)
    for document in range(count):
        ids = np.asarray(indexed.document(document), dtype=np.int64)
        if len(ids) and end_of_document is not None and ids[-1] == end_of_document:
            ids = ids[:-1]
        if len(ids) and int(ids.max()) >= vocab_size:
            raise InputError(f"{prefix}.bin: document {document} holds token id {int(ids.max())}, but the model and "
                             f"its tokenizer know only {vocab_size} tokens: the data was preprocessed with another "
                             "tokenizer. Preprocess it with the model's tokenizer, or score the text files instead.")
        yield ids
