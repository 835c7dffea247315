"""The model layer: the model families (GPT-2, BERT, Llama) built for the parallel plan, the fused LM head, kernels."""

from pretrain.model.build import PretrainModel, build_model, count_parameters, parameter_groups
from pretrain.model.hf import padded_vocab_size, transformer_block_class

__all__ = ["PretrainModel", "build_model", "count_parameters", "padded_vocab_size", "parameter_groups",
           "transformer_block_class"]
