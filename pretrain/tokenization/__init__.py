"""Tokenizers: load any common layout (``load_tokenizer``) and train new ones (``training``)."""

from pretrain.tokenization.loading import (
    LoadedTokenizer,
    TokenizerError,
    load_tokenizer,
    run_roles,
    warn_if_another_vocabulary,
)

__all__ = ["LoadedTokenizer", "TokenizerError", "load_tokenizer", "run_roles", "warn_if_another_vocabulary"]
