"""The end-to-end demo on the built-in corpus (``python -m pretrain.demo``): the pipeline's demo recipe
(pretrain/recipes/demo.yaml: cleaning, a tokenizer, preprocessing, a tiny model trained with DeepSpeed on
2 CPU ranks, export to Hugging Face), then a look at the dataset and a generated sample.

The corpus (``corpus/ko.txt``, ``corpus/de.txt``) was written for this project: 22 short Korean and
22 short German documents about everyday topics, separated by blank lines, under the project's license.
"""
