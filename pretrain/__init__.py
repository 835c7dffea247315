"""pretrain: tokenizers, indexed datasets and DeepSpeed ZeRO-3 pretraining for GPT-2 and BERT.

Importing the package is cheap on purpose (no torch, no transformers): preprocessing workers import
``pretrain.data`` modules and must stay small in memory.
"""

__version__ = "0.1.0"
