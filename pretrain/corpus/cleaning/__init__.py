"""Cleaning corpora before tokenizing them: quality rules per language, exact and near-duplicate removal,
a report a person can read (``pretrain-clean``, ``tools/clean_corpus.py``)."""
