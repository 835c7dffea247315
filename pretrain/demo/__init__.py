"""The end-to-end demo on the built-in corpus (``python -m pretrain.demo``): tokenizer, preprocessing,
a tiny model trained with ZeRO-3 on 2 CPU ranks, export to Hugging Face, and a generated sample.

The corpus (``corpus/ko.txt``, ``corpus/de.txt``) was written for this project: 22 short Korean and
22 short German documents about everyday topics, separated by blank lines, under the project's license.
"""
