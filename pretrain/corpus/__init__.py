"""Corpus readers, below everything else: formats, compression, records with their file and line,
sharding. Tokenizer training and preprocessing both read corpora through here."""
