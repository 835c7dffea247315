"""The ids a dataset may hand a model: below the tokenizer's size. The data check before training reads only
part of the data, so each sample is checked as it is read: an id past the tokenizer would be an index error on a
GPU, or a padding row of the embedding trained silently."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pretrain.data.indexed import DataFileError


@dataclass(frozen=True)
class VocabularyBound:
    size: int
    """The tokenizer's ids (data.tokenizer, as the run loaded it)."""
    tokenizer: str
    """The tokenizer folder or name, to say what an unknown id was."""

    def check(self, tokens: np.ndarray, where: str) -> None:
        """Raise DataFileError naming ``where`` (a file and sample) if ``tokens`` holds an id past the tokenizer."""
        if len(tokens) and (highest := int(tokens.max())) >= self.size:
            raise DataFileError(f"{where} holds token id {highest}, past the {self.size} tokens of data.tokenizer "
                                f"{self.tokenizer}: {self.cause(highest)}")

    def cause(self, token_id: int) -> str:
        """Why data holds ``token_id``, and the fix. Until 2026-12 every load added all six special roles, so data
        preprocessed with a release could hold the id of a <s>, <pad> or <mask> it lacked, where the text had it."""
        from pretrain.tokenization import load_tokenizer
        from pretrain.tokenization.specials import ROLES

        added = None
        if Path(self.tokenizer).is_dir():  # a hub name would wait on the network (in a data loader worker)
            try:
                added = load_tokenizer(self.tokenizer, ROLES, quiet=True)
            except Exception:  # noqa: BLE001 - the folder changed since the run loaded it: the general cause
                added = None
        if added is not None and self.size <= token_id < added.vocab_size:
            return (f"id {token_id} is {added.backend.id_to_token(token_id)!r}, a special token that this project added "
                    "to the tokenizer before 2026-12 and a causal LM's load no longer adds (a literal one in the text, "
                    "taken for a special token). Preprocess the data again, or set data.tokenizer to the "
                    "RUN_DIR/tokenizer of a run that trained on it, which keeps those tokens.")
        return ("the data was preprocessed with another tokenizer. Set data.tokenizer to the folder used for "
                "preprocessing, or preprocess the data again.")
