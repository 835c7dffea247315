"""Evaluation: bits per byte per blend source during training (``sources``, ``token_bytes``), and
``pretrain-eval``'s scoring of any causal or masked LM on text, jsonl or ``.bin/.idx`` inputs."""
