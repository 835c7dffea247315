"""The model a run trains: a transformers GPT-2 or BERT plus its loss head, built for the parallel plan.

``build_model`` takes only what it needs: the model section, the vocabulary size and special ids, and
how to run (ZeRO-3 or not, how many blocks recompute, compiled blocks, GPU). ``PretrainModel.forward``
takes a batch and returns ``(mean loss, labelled tokens)`` as tensors, reading nothing back to the host:
GPT-2 shifts its packed samples; BERT gathers a fixed number of predicted positions per sample (no
boolean indexing, whose size only the GPU knows) and passes a padding mask as a ready 4-D tensor (or
none when the batch has no padding, so SDPA can use its flash kernel).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from contextlib import nullcontext

import torch
from torch import nn

from pretrain.config import ModelConfig
from pretrain.model.head import LMHead
from pretrain.model.hf import (
    create_uninitialized,
    from_pretrained,
    hf_config,
    hf_model_class,
    initialize_weights,
    padded_vocab_size,
    transformer_block_class,
    transformer_blocks,
)
from pretrain.presets import get_preset

log = logging.getLogger(__name__)


class PretrainModel(nn.Module):
    """The Hugging Face model plus its pretraining loss: ``forward(batch) -> (loss, tokens)``."""

    def __init__(self, hf: nn.Module, family: str, head: LMHead) -> None:
        super().__init__()
        self.hf = hf
        self.family = family
        self.head = head

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        if self.family == "gpt2":
            tokens = batch["tokens"]
            hidden = self._gpt2_trunk(tokens[:, :-1])
            return self.head(hidden.reshape(-1, hidden.shape[-1]), tokens[:, 1:].reshape(-1))
        bert_out = self.hf.bert(input_ids=batch["input_ids"], token_type_ids=batch["token_type_ids"],
                                attention_mask=self._padding_mask(batch.get("attention_mask")))
        hidden = bert_out.last_hidden_state
        positions = batch["masked_positions"]  # [batch, most predictions]: padded with position 0, label -100
        picked = hidden.gather(1, positions[..., None].expand(-1, -1, hidden.shape[-1]))
        labels = batch["labels"].gather(1, positions)
        transformed = self.hf.cls.predictions.transform(picked.reshape(-1, picked.shape[-1]))
        loss, count = self.head(transformed, labels.reshape(-1))
        if "sop_label" in batch:
            sop_logits = self.hf.cls.seq_relationship(bert_out.pooler_output)
            loss = loss + nn.functional.cross_entropy(sop_logits.float(), batch["sop_label"])
        return loss, count

    def _gpt2_trunk(self, input_ids: torch.Tensor) -> torch.Tensor:
        """GPT2Model's forward for training, module by module: embeddings, blocks with no mask (SDPA's causal
        flash kernel), final norm. transformers' own forward also looks for padding in the inputs and for
        packed sequences in the positions, two reads of GPU values per step."""
        trunk = self.hf.transformer
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        hidden = trunk.drop(trunk.wte(input_ids) + trunk.wpe(positions))
        for block in trunk.h:
            hidden = block(hidden)
        return trunk.ln_f(hidden)

    def _padding_mask(self, mask: torch.Tensor | None) -> torch.Tensor | None:
        """[batch, 1, query, key] as transformers takes it ready-made (it would otherwise ask the GPU whether
        the 2-D mask is all ones: a host sync); boolean for SDPA, additive for eager attention."""
        if mask is None:
            return None
        length = mask.shape[1]
        keep = mask[:, None, None, :].bool().expand(-1, 1, length, -1)
        if self.hf.config._attn_implementation == "sdpa":
            return keep
        dtype = self.hf.get_input_embeddings().weight.dtype
        if torch.is_autocast_enabled(mask.device.type):
            dtype = torch.get_autocast_dtype(mask.device.type)
        return torch.zeros((), dtype=dtype, device=mask.device).masked_fill(~keep, torch.finfo(dtype).min)


def build_model(model: ModelConfig, vocab_size: int, special_ids: Mapping[str, int], *, sentence_order: bool,
                seed: int, ds_config: dict | None, recompute_layers: int = 0, compile_blocks: bool = False,
                on_gpu: bool = False) -> PretrainModel:
    """A fresh (or continued) model; under ZeRO-3 it is created partitioned with zero.Init.

    ``vocab_size`` is the tokenizer's; the embedding is padded to a multiple of model.vocab_multiple.
    ``recompute_layers`` blocks (the first ones) recompute their activations in backward."""
    import deepspeed

    preset = get_preset(model.preset)
    zero3 = bool(ds_config) and ds_config.get("zero_optimization", {}).get("stage") == 3
    cls = hf_model_class(preset.family, preset.family == "bert" and sentence_order)
    if model.init_from:
        hf = from_pretrained(cls, model.init_from, preset, vocab_size, model.vocab_multiple, model.attention,
                             ds_config if zero3 else None)
    else:
        config = hf_config(preset, padded_vocab_size(vocab_size, model.vocab_multiple), special_ids, model.dropout,
                           model.attention)
        # zero.Init even when disabled starts a process group (and claims a port) if none exists
        with deepspeed.zero.Init(config_dict_or_path=ds_config) if zero3 else nullcontext():
            hf = create_uninitialized(cls, config)
        initialize_weights(hf, preset.family, preset.layers, seed, hf.config.initializer_range)
    block_classes = [transformer_block_class(preset.family)]
    if model.block == "own":
        from pretrain.model.gpt_block import CompactGPT2Block

        blocks = transformer_blocks(hf)
        for index, block in enumerate(blocks):
            blocks[index] = CompactGPT2Block(block)
        block_classes.append(CompactGPT2Block)
        log.info("GPT-2 blocks: this project's compact block (same parameters as transformers' GPT2Block)")
    set_recompute(hf, recompute_layers)
    if compile_blocks:
        compile_each_block(hf)
    head = LMHead(hf.get_output_embeddings(), model.lm_head, on_gpu)
    result = PretrainModel(hf, preset.family, head)
    if zero3:
        head.register_with_zero3()
        if model.zero3_whole_blocks:
            gathered = deepspeed.utils.set_z3_leaf_modules(hf, block_classes)
            log.info("ZeRO-3 gathers each of the %d transformer blocks' parameters at once", len(gathered))
    return result


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


def compile_each_block(hf: nn.Module) -> None:
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
            shared[cls] = CompiledOrEager(cls.forward, f"the {cls.__name__} blocks")
        block.forward = partial(shared[cls], block)
    log.info("torch.compile: each of the %d transformer blocks (one shared graph)", len(blocks))


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
