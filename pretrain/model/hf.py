"""The ``transformers`` model a run trains, whatever its family: config, class, initialization, continuing from
a folder. What differs between families is asked of the family (pretrain/model/families/).

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

from pretrain.model.families import ModelFamily, family_for_model_type, get_family
from pretrain.presets import Preset

log = logging.getLogger(__name__)


def padded_vocab_size(tokenizer_size: int, multiple: int) -> int:
    return int(math.ceil(tokenizer_size / multiple) * multiple)


def continued_rows(rows: int, tokenizer_size: int, multiple: int) -> int:
    """A released model's embedding rows once continued with a tokenizer: its own where they suffice, else
    grown to the tokenizer and padded (model.init_from; the plan sizes the same)."""
    return rows if tokenizer_size <= rows else padded_vocab_size(tokenizer_size, multiple)


def hf_config(preset: Preset, vocab_size: int, special_ids: Mapping[str, int], dropout: float = 0.0,
              attention: str = "sdpa"):
    """A transformers config for a fresh model of this preset with ``vocab_size`` embedding rows."""
    return get_family(preset.family).hf_config(preset, vocab_size, special_ids, dropout, attention)


def hf_model_class(family: str, sentence_order: bool):
    """The family's transformers class (BERT: with sentence-order prediction or without)."""
    return get_family(family).model_class(sentence_order)


def transformer_block_class(family: str) -> type[nn.Module]:
    """The class of one transformer block of the family."""
    return get_family(family).block_class()


def family_of(hf: nn.Module) -> ModelFamily:
    """The family of a built transformers model, from its config's model_type."""
    family = family_for_model_type(hf.config.model_type)
    if family is None:
        raise ValueError(f"no model family builds transformers' {hf.config.model_type!r} models")
    return family


def transformer_blocks(hf: nn.Module) -> nn.ModuleList:
    """The model's list of transformer blocks (GPT-2's ``transformer.h``, BERT's ``bert.encoder.layer``, ...)."""
    return family_of(hf).blocks(hf)


def keep_generation_config(folder: str, run_model_dir) -> None:
    """Copy a released folder's generation config (its sampling defaults, stop tokens) beside the run's model
    config, where the export takes it from; a folder without one (or a hub name offline) leaves none."""
    from transformers import GenerationConfig

    try:
        GenerationConfig.from_pretrained(folder).save_pretrained(run_model_dir)
    except OSError:
        pass


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
    """Module by module, with parameters gathered under ZeRO-3: normal(0, std) for weight matrices and
    embeddings (the family may scale some: GPT-2's and Llama's residual output projections; and truncate it:
    ModernBERT's at 2 std), zero biases, unit norms.

    Rank 0 draws from one seeded generator in module order and broadcasts, so the result does not depend on
    the world size; the generator is the weights' device's (a CPU run and a GPU run start from different draws).
    """
    import deepspeed

    spec = get_family(family)
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    device = next(model.parameters()).device  # draw where the weights live (a GPU's generator on a GPU)
    generator = torch.Generator(device=device).manual_seed(seed)
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
                if spec.is_norm(module):
                    param.fill_(1.0 if pname == "weight" else 0.0)
                elif pname.endswith("bias"):
                    param.zero_()
                else:
                    scale = spec.init_std(name, std, n_layers)
                    values = torch.empty(param.shape, dtype=torch.float32, device=device)
                    if spec.init_cutoff is None:
                        values.normal_(0.0, scale, generator=generator)
                    else:
                        cut = spec.init_cutoff * scale
                        nn.init.trunc_normal_(values, 0.0, scale, -cut, cut, generator=generator)
                    param.copy_(values.to(param.dtype))
                    if isinstance(module, nn.Embedding) and module.padding_idx is not None:
                        param[module.padding_idx].zero_()


def from_pretrained(cls, folder: str, vocab_size: int, vocab_multiple: int, attention: str,
                    ds_config: dict | None, load_weights: bool = True) -> nn.Module:
    """Continue from a Hugging Face folder (of the preset's family: ``model_shape`` checks), in fp32 (a release
    saved in bf16 would otherwise load in bf16 and be updated in it); grow the embedding when the tokenizer
    has more tokens than it has rows. ``load_weights=False``: the folder's architecture only, grown alike,
    its weights left uninitialized for a checkpoint to fill (a resumed run)."""
    import deepspeed
    from transformers import AutoConfig
    from transformers.integrations import HfDeepSpeedConfig

    if not load_weights:
        config = AutoConfig.from_pretrained(folder, attn_implementation=attention)
        config.vocab_size = continued_rows(config.vocab_size, vocab_size, vocab_multiple)  # as the first launch
        with deepspeed.zero.Init(config_dict_or_path=ds_config) if ds_config else nullcontext():
            return create_uninitialized(cls, config)
    keep_alive = HfDeepSpeedConfig(ds_config) if ds_config else None  # makes from_pretrained ZeRO-3 aware
    hf = cls.from_pretrained(folder, attn_implementation=attention, dtype=torch.float32)
    rows = hf.get_input_embeddings().num_embeddings if not ds_config else hf.config.vocab_size
    target = continued_rows(rows, vocab_size, vocab_multiple)
    if target != rows:
        log.warning("%s has %d embedding rows but the tokenizer has %d tokens: resizing to %d", folder, rows, vocab_size,
                    target)
        hf.resize_token_embeddings(target)
    del keep_alive
    return hf
