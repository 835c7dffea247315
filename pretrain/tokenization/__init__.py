"""Tokenizers: load any common layout (``load_tokenizer``) and train new ones (``training``)."""

from pretrain.tokenization.loading import LoadedTokenizer, TokenizerError, load_tokenizer

__all__ = ["LoadedTokenizer", "TokenizerError", "load_tokenizer"]
