"""Data: indexed token files, corpus readers, preprocessing, and the training datasets."""
