"""The model a run trains: a transformers model of one family plus its loss head, built for the parallel plan.

``build_model`` takes only what it needs: the model section, the vocabulary size and special ids, and
how to run (ZeRO-3 or not, how many blocks recompute, compiled blocks, GPU, packed documents masked).
``PretrainModel.forward`` takes a batch and returns ``(mean loss, labelled tokens)`` as tensors, reading
nothing back to the host; the family computes it (pretrain/model/families/: GPT-2 and Llama shift their
packed samples, BERT gathers a fixed number of predicted positions per sample).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from contextlib import nullcontext

import torch
from torch import nn

from pretrain.config import ModelConfig
from pretrain.model.families import Attention, ModelFamily, get_family
from pretrain.model.head import LMHead
from pretrain.model.hf import create_uninitialized, from_pretrained, initialize_weights, padded_vocab_size, transformer_blocks
from pretrain.presets import Preset, get_preset

log = logging.getLogger(__name__)


class PretrainModel(nn.Module):
    """The Hugging Face model plus its pretraining loss: ``forward(batch) -> (loss, tokens)``.

    ``family`` computes the loss; ``shape`` is the built model's (its folder's with model.init_from);
    ``attention`` says which kernel and whether packed documents are masked."""

    def __init__(self, hf: nn.Module, family: ModelFamily, head: LMHead, shape: Preset,
                 attention: Attention | None = None) -> None:
        super().__init__()
        self.hf = hf
        self.family = family
        self.head = head
        self.shape = shape
        self.attention = attention or Attention(hf.config._attn_implementation)

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.family.forward(self, batch)


def model_shape(model: ModelConfig) -> Preset:
    """The shape the run trains: with model.init_from the folder's (read from its config.json, no weights;
    its ``vocab`` the folder's rows), else the preset with the model section's own choices applied (rotary
    base, tied embeddings). The parallel plan is sized on it, and the model built to it."""
    preset = get_preset(model.preset)
    if model.init_from:
        return _folder_shape(model.init_from, preset)
    changes = {}
    if model.rope_theta is not None:
        changes["rope_theta"] = model.rope_theta
    if model.tie_embeddings is not None:
        changes["tie_embeddings"] = model.tie_embeddings
    return dataclasses.replace(preset, **changes) if changes else preset


def _folder_shape(folder: str, preset: Preset) -> Preset:
    from transformers import AutoConfig

    from pretrain.model.families import family_for_model_type

    config = AutoConfig.from_pretrained(folder)
    family = family_for_model_type(config.model_type)
    if family is None or family.name != preset.family:
        raise ValueError(f"model.init_from={folder} is a {config.model_type} model, but model.preset={preset.name} "
                         f"asks for the {preset.family} family")
    return dataclasses.replace(family.shape_of(config), name=f"{preset.family} from {folder}",
                               vocab=config.vocab_size)


def build_model(model: ModelConfig, vocab_size: int, special_ids: Mapping[str, int], *, sentence_order: bool,
                seed: int, ds_config: dict | None, recompute_layers: int = 0, compile_blocks: bool = False,
                on_gpu: bool = False, document_mask: bool = False, load_weights: bool = True) -> PretrainModel:
    """A fresh (or continued) model; under ZeRO-3 it is created partitioned with zero.Init.
    ``load_weights=False`` with model.init_from: the folder's architecture without its weights (a checkpoint
    will load them).

    ``vocab_size`` is the tokenizer's; the embedding is padded to a multiple of model.vocab_multiple.
    ``recompute_layers`` blocks (the first ones) recompute their activations in backward;
    ``document_mask``: batches of packed documents carry per-document positions (data.document_mask)."""
    import deepspeed

    shape = model_shape(model)
    family = get_family(shape.family)
    family.check_special_ids(special_ids)
    zero3 = bool(ds_config) and ds_config.get("zero_optimization", {}).get("stage") == 3
    cls = family.model_class(sentence_order)
    if model.init_from:
        hf = from_pretrained(cls, model.init_from, vocab_size, model.vocab_multiple, model.attention,
                             ds_config if zero3 else None, load_weights)
        shape = dataclasses.replace(family.shape_of(hf.config), name=shape.name, vocab=hf.config.vocab_size)  # grown
        if load_weights:  # the first launch; a resumed one builds from the run's copy of the folder's config
            _say_what_the_folder_keeps(model, shape)
    else:
        config = family.hf_config(shape, padded_vocab_size(vocab_size, model.vocab_multiple), special_ids,
                                  model.dropout, model.attention)
        # zero.Init even when disabled starts a process group (and claims a port) if none exists. Without it,
        # a GPU run creates and initializes the model on its GPU: gpt2-xl's 1.6 B values drawn on one CPU
        # thread took longer than the rest of the start-up
        on_device = torch.device("cuda", torch.cuda.current_device()) if on_gpu and not zero3 else nullcontext()
        with deepspeed.zero.Init(config_dict_or_path=ds_config) if zero3 else on_device:
            hf = create_uninitialized(cls, config)
        initialize_weights(hf, family.name, shape.layers, seed, hf.config.initializer_range)
    attention = family.configure_attention(hf, document_mask, on_gpu)
    block_classes = [family.block_class()]
    if model.block == "own":
        block_classes += family.use_own_blocks(hf)
        log.info("%s blocks: this project's compact block (same parameters as transformers' %s)", family.name,
                 block_classes[0].__name__)
    set_recompute(hf, recompute_layers)
    if compile_blocks:
        compile_each_block(hf, model.compile_backend)
    head = LMHead(hf.get_output_embeddings(), model.lm_head, on_gpu)
    result = PretrainModel(hf, family, head, shape, attention)
    if zero3:
        head.register_with_zero3()
        if model.zero3_whole_blocks:
            gathered = deepspeed.utils.set_z3_leaf_modules(hf, block_classes)
            log.info("ZeRO-3 gathers each of the %d transformer blocks' parameters at once", len(gathered))
    return result


def _say_what_the_folder_keeps(model: ModelConfig, shape: Preset) -> None:
    """A folder's rotary base and tied embeddings are its model's (another base or tying is another model); the
    model section's own values, which a shipped config sets for fresh models, are not applied: say so where
    they differ rather than let config.yaml suggest otherwise."""
    kept = [(f"model.{key}={mine}", f"{theirs}") for key, mine, theirs in (
        ("rope_theta", model.rope_theta, shape.rope_theta), ("tie_embeddings", model.tie_embeddings, shape.tie_embeddings))
        if mine is not None and theirs is not None and mine != theirs]
    if torch.distributed.is_initialized() and torch.distributed.get_rank() != 0:  # every rank builds: one says it
        return
    for setting, theirs in kept:
        log.warning("%s is not applied: model.init_from=%s keeps its own (%s)", setting, model.init_from, theirs)


def set_recompute(hf: nn.Module, layers: int) -> None:
    """Recompute the activations of the first ``layers`` blocks in backward (all of them: full
    checkpointing; some: selective, which trades just enough compute for the memory that was missing)."""
    if layers <= 0:
        return
    hf.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    blocks = transformer_blocks(hf)
    for index, block in enumerate(blocks):
        block.gradient_checkpointing = index < layers
    log.info("activation checkpointing: %d of %d transformer blocks recompute in backward", min(layers, len(blocks)),
             len(blocks))


def compile_each_block(hf: nn.Module, backend: str = "inductor") -> None:
    """Regional compilation: each block's ``forward`` goes through one ``torch.compile`` of the block class's
    forward. The module hooks (ZeRO-3's gathering) stay outside the graph, every block shares the compiled
    graph (parameters are graph inputs), and a failure to compile falls back to eager, said once."""
    from functools import partial

    from pretrain.model.compiled import CompiledOrEager

    blocks = transformer_blocks(hf)
    shared: dict[type, CompiledOrEager] = {}
    for block in blocks:
        cls = type(block)
        if cls not in shared:
            shared[cls] = CompiledOrEager(cls.forward, f"the {cls.__name__} blocks", backend=backend)
        block.forward = partial(shared[cls], block)
    log.info("torch.compile: each of the %d transformer blocks (one shared graph, %s)", len(blocks), backend)


def no_decay(name: str, param: torch.Tensor) -> bool:
    """Biases and normalization weights get no weight decay (shape read before ZeRO-3 partitioning)."""
    shape = getattr(param, "ds_shape", param.shape)
    return len(shape) < 2 or name.endswith(".bias")


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    decay, plain = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (plain if no_decay(name, param) else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0}]


def count_parameters(model: nn.Module) -> int:
    """Distinct parameters (tied ones once), full sizes even when ZeRO-3 has partitioned them."""
    seen, total = set(), 0
    for param in model.parameters():
        if id(param) not in seen:
            seen.add(id(param))
            total += getattr(param, "ds_numel", param.numel())
    return total
