"""GPT-2 and BERT as ``transformers`` classes: configs, classes, initialization, continuing from a folder.

The Hugging Face model is kept as is, so checkpoints export as standard models. Initialization needs
care under ZeRO-3: under ``deepspeed.zero.Init`` parameters are partitioned as they are created, and
transformers' own init runs on empty partitions (GPT-2 would start at torch defaults: an initial loss
of ~40 instead of ln(vocab)). ``initialize_weights`` re-initializes every module with its parameters
gathered, on rank 0 from a generator seeded by run.seed, so 1 and N ranks start identically.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from contextlib import nullcontext

import torch
from torch import nn

from pretrain.presets import Preset

log = logging.getLogger(__name__)


def padded_vocab_size(tokenizer_size: int, multiple: int) -> int:
    return int(math.ceil(tokenizer_size / multiple) * multiple)


def hf_config(preset: Preset, vocab_size: int, special_ids: Mapping[str, int], dropout: float = 0.0,
              attention: str = "sdpa"):
    """A transformers config for a fresh model of this preset with ``vocab_size`` embedding rows."""
    if preset.family == "gpt2":
        from transformers.models.gpt2.configuration_gpt2 import GPT2Config

        eod = special_ids.get("eod")
        return GPT2Config(
            vocab_size=vocab_size, n_positions=preset.max_positions, n_embd=preset.hidden, n_layer=preset.layers,
            n_head=preset.heads, n_inner=preset.ffn_hidden, resid_pdrop=dropout, embd_pdrop=dropout,
            attn_pdrop=dropout, bos_token_id=eod, eos_token_id=eod, pad_token_id=special_ids.get("pad"),
            tie_word_embeddings=True, attn_implementation=attention, use_cache=False,
            activation_function="gelu_pytorch_tanh",  # GPT-2's tanh GELU as one fused kernel, not five elementwise ops
        )
    from transformers.models.bert.configuration_bert import BertConfig

    return BertConfig(
        vocab_size=vocab_size, hidden_size=preset.hidden, num_hidden_layers=preset.layers,
        num_attention_heads=preset.heads, intermediate_size=preset.ffn_hidden,
        max_position_embeddings=preset.max_positions, hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout, pad_token_id=special_ids.get("pad", 0), type_vocab_size=2,
        tie_word_embeddings=True, attn_implementation=attention,
    )


def hf_model_class(family: str, sentence_order: bool):
    """GPT2LMHeadModel, BertForPreTraining (with sentence-order prediction) or BertForMaskedLM; only the
    family's module is imported (transformers' BERT module alone takes seconds)."""
    if family == "gpt2":
        from transformers.models.gpt2.modeling_gpt2 import GPT2LMHeadModel

        return GPT2LMHeadModel
    from transformers.models.bert.modeling_bert import BertForMaskedLM, BertForPreTraining

    return BertForPreTraining if sentence_order else BertForMaskedLM


def transformer_block_class(family: str) -> type[nn.Module]:
    """The class of one transformer layer: GPT2Block or BertLayer."""
    if family == "gpt2":
        from transformers.models.gpt2.modeling_gpt2 import GPT2Block

        return GPT2Block
    from transformers.models.bert.modeling_bert import BertLayer

    return BertLayer


def transformer_blocks(hf: nn.Module) -> nn.ModuleList:
    """The model's list of transformer layers (GPT-2's ``transformer.h``, BERT's ``bert.encoder.layer``)."""
    return hf.transformer.h if hasattr(hf, "transformer") else hf.bert.encoder.layer


def create_uninitialized(cls, config) -> nn.Module:
    """The model with tied embeddings and no initialization (initialize_weights does that): under
    ZeRO-3, transformers' own init would run on empty partitions (and fails on BERT's padding row)."""
    from transformers.initialization import no_init_weights

    with no_init_weights():
        model = cls(config)
    model.tie_weights()
    return model


@torch.no_grad()
def initialize_weights(model: nn.Module, family: str, n_layers: int, seed: int, std: float = 0.02) -> None:
    """GPT-2 / BERT initialization, module by module with parameters gathered under ZeRO-3.

    Normal(0, 0.02) for linear and embedding weights, zero biases, unit norms; GPT-2 scales the
    residual output projections (c_proj) by 1/sqrt(2 * layers). Rank 0 draws from one seeded
    generator in module order and broadcasts, so the result does not depend on the world size.
    """
    import deepspeed

    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    generator = torch.Generator().manual_seed(seed)
    seen: set[int] = set()
    for name, module in model.named_modules():
        params = [(n, p) for n, p in module.named_parameters(recurse=False) if id(p) not in seen]
        if not params:
            continue
        seen.update(id(p) for _, p in params)
        zero3 = any(hasattr(p, "ds_id") for _, p in params)
        gathered = deepspeed.zero.GatheredParameters([p for _, p in params], modifier_rank=0) if zero3 else nullcontext()
        with gathered:
            if rank != 0 and zero3:
                continue  # rank 0's values are broadcast when the context exits
            for pname, param in params:
                if isinstance(module, nn.LayerNorm):
                    param.fill_(1.0 if pname == "weight" else 0.0)
                elif pname.endswith("bias"):
                    param.zero_()
                else:
                    scale = std / math.sqrt(2 * n_layers) if family == "gpt2" and name.endswith("c_proj") else std
                    values = torch.empty(param.shape, dtype=torch.float32).normal_(0.0, scale, generator=generator)
                    param.copy_(values.to(param.dtype))
                    if isinstance(module, nn.Embedding) and module.padding_idx is not None:
                        param[module.padding_idx].zero_()


def from_pretrained(cls, folder: str, preset: Preset, vocab_size: int, vocab_multiple: int, attention: str,
                    ds_config: dict | None) -> nn.Module:
    """Continue from a Hugging Face folder; grow the embedding when the tokenizer grew."""
    from transformers.integrations import HfDeepSpeedConfig

    keep_alive = HfDeepSpeedConfig(ds_config) if ds_config else None  # makes from_pretrained ZeRO-3 aware
    hf = cls.from_pretrained(folder, attn_implementation=attention)
    family = {"gpt2": "gpt2", "bert": "bert"}.get(hf.config.model_type)
    if family != preset.family:
        raise ValueError(f"model.init_from={folder} is a {hf.config.model_type} model, but model.preset={preset.name} "
                         f"asks for {preset.family}")
    rows = hf.get_input_embeddings().num_embeddings if not ds_config else hf.config.vocab_size
    if rows < vocab_size:
        target = padded_vocab_size(vocab_size, vocab_multiple)
        log.warning("%s has %d embedding rows but the tokenizer has %d tokens: resizing to %d", folder, rows, vocab_size,
                    target)
        hf.resize_token_embeddings(target)
    del keep_alive
    return hf
