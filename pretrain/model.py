"""GPT-2 and BERT from ``transformers`` classes, built for ZeRO-3, wrapped with their loss.

The Hugging Face model is kept as is (``PretrainModel.hf``) so checkpoints export as standard
models. Two things need care under ZeRO-3:
  * Initialization. Under ``deepspeed.zero.Init`` parameters are partitioned as they are created,
    and transformers' own init runs on empty partitions: GPT-2 would start at torch defaults
    (initial loss ~40 instead of ln(vocab)). We re-initialize every module with its parameters
    gathered, on rank 0 from a generator seeded by run.seed, so 1 and N ranks start identically.
  * The loss head. The loss is computed here from the last hidden states (see pretrain/loss.py),
    reading the tied output embedding through ``register_external_parameter`` so ZeRO-3 gathers it.
"""

from __future__ import annotations

import logging
import math
from contextlib import nullcontext

import torch
from torch import nn

from pretrain.config import Config
from pretrain.loss import lm_cross_entropy
from pretrain.presets import Preset, get_preset
from pretrain.tokenization import LoadedTokenizer

log = logging.getLogger(__name__)


def padded_vocab_size(tokenizer_size: int, multiple: int) -> int:
    return int(math.ceil(tokenizer_size / multiple) * multiple)


def hf_config(preset: Preset, config: Config, tokenizer: LoadedTokenizer):
    """A transformers config for a fresh model of this preset and tokenizer."""
    from transformers import BertConfig, GPT2Config

    vocab = padded_vocab_size(tokenizer.vocab_size, config.model.vocab_multiple)
    ids = tokenizer.specials.ids
    dropout = config.model.dropout
    if preset.family == "gpt2":
        return GPT2Config(
            vocab_size=vocab, n_positions=preset.max_positions, n_embd=preset.hidden, n_layer=preset.layers,
            n_head=preset.heads, n_inner=preset.ffn_hidden, resid_pdrop=dropout, embd_pdrop=dropout,
            attn_pdrop=dropout, bos_token_id=ids["eod"], eos_token_id=ids["eod"], pad_token_id=ids["pad"],
            tie_word_embeddings=True, attn_implementation=config.model.attention, use_cache=False,
            activation_function="gelu_pytorch_tanh",  # GPT-2's tanh GELU as one fused kernel, not five elementwise ops
        )
    return BertConfig(
        vocab_size=vocab, hidden_size=preset.hidden, num_hidden_layers=preset.layers,
        num_attention_heads=preset.heads, intermediate_size=preset.ffn_hidden,
        max_position_embeddings=preset.max_positions, hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout, pad_token_id=ids["pad"], type_vocab_size=2,
        tie_word_embeddings=True, attn_implementation=config.model.attention,
    )


def hf_model_class(family: str, sentence_order: bool):
    from transformers import BertForMaskedLM, BertForPreTraining, GPT2LMHeadModel

    if family == "gpt2":
        return GPT2LMHeadModel
    return BertForPreTraining if sentence_order else BertForMaskedLM


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


class PretrainModel(nn.Module):
    """The Hugging Face model plus its pretraining loss: ``forward(batch) -> (loss, tokens)``."""

    def __init__(self, hf: nn.Module, family: str, fused_loss: bool, chunk_rows: int = 4096) -> None:
        super().__init__()
        self.hf = hf
        self.family = family
        self.fused_loss = fused_loss
        self.chunk_rows = chunk_rows
        self.head = _OutputEmbedding(hf.get_output_embeddings())

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        if self.family == "gpt2":
            tokens = batch["tokens"]
            inputs, labels = tokens[:, :-1], tokens[:, 1:]
            hidden = self.hf.transformer(input_ids=inputs, use_cache=False).last_hidden_state
            loss, count = self.head(hidden.reshape(-1, hidden.shape[-1]), labels.reshape(-1),
                                    self.chunk_rows if self.fused_loss else None)
            return loss, count
        bert_out = self.hf.bert(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                token_type_ids=batch["token_type_ids"])
        hidden, labels = bert_out.last_hidden_state, batch["labels"]
        predicted = labels.reshape(-1) != -100  # only masked positions reach the vocabulary projection
        selected = hidden.reshape(-1, hidden.shape[-1])[predicted]
        transformed = self._mlm_transform(selected)
        loss, count = self.head(transformed, labels.reshape(-1)[predicted], self.chunk_rows if self.fused_loss else None)
        if "sop_label" in batch:
            sop_logits = self.hf.cls.seq_relationship(bert_out.pooler_output)
            loss = loss + nn.functional.cross_entropy(sop_logits.float(), batch["sop_label"])
        return loss, count

    def _mlm_transform(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.hf.cls.predictions.transform(hidden)


class _OutputEmbedding(nn.Module):
    """Computes the LM loss from hidden states with the (tied) output embedding.

    It owns no parameters: the output projection's weight (and BERT's decoder bias) are registered
    as external parameters, so ZeRO-3 gathers them for this module's forward and backward.
    """

    def __init__(self, projection: nn.Linear) -> None:
        super().__init__()
        self._projection = [projection]  # a list: not a submodule, its parameters stay where they are

    @property
    def weight(self) -> torch.Tensor:
        return self._projection[0].weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self._projection[0].bias

    def register_with_zero3(self) -> None:
        import deepspeed

        deepspeed.zero.register_external_parameter(self, self.weight)
        if self.bias is not None:
            deepspeed.zero.register_external_parameter(self, self.bias)

    def forward(self, hidden: torch.Tensor, labels: torch.Tensor, chunk_rows: int | None) -> tuple[torch.Tensor, torch.Tensor]:
        return lm_cross_entropy(hidden, self.weight, labels, bias=self.bias, chunk_rows=chunk_rows)


def build_model(config: Config, tokenizer: LoadedTokenizer, ds_config: dict | None) -> PretrainModel:
    """A fresh (or continued) model; under ZeRO-3 it is created partitioned with zero.Init."""
    import deepspeed

    preset = get_preset(config.model.preset)
    zero3 = bool(ds_config) and ds_config.get("zero_optimization", {}).get("stage") == 3
    sentence_order = preset.family == "bert" and config.data.sentence_order_prediction
    cls = hf_model_class(preset.family, sentence_order)
    if config.model.init_from:
        hf = _from_pretrained(cls, config, tokenizer, ds_config if zero3 else None)
    else:
        with deepspeed.zero.Init(config_dict_or_path=ds_config, enabled=zero3):
            hf = create_uninitialized(cls, hf_config(preset, config, tokenizer))
        initialize_weights(hf, preset.family, preset.layers, config.run.seed, hf.config.initializer_range)
    if config.model.activation_checkpointing:
        hf.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model = PretrainModel(hf, preset.family, config.model.fused_loss)
    if zero3:
        model.head.register_with_zero3()
        if config.model.zero3_whole_blocks:
            blocks = deepspeed.utils.set_z3_leaf_modules(hf, [transformer_block_class(preset.family)])
            log.info("ZeRO-3 gathers each of the %d transformer blocks' parameters at once", len(blocks))
    return model


def transformer_block_class(family: str) -> type[nn.Module]:
    """The class of one transformer layer: GPT2Block or BertLayer."""
    if family == "gpt2":
        from transformers.models.gpt2.modeling_gpt2 import GPT2Block

        return GPT2Block
    from transformers.models.bert.modeling_bert import BertLayer

    return BertLayer


def _from_pretrained(cls, config: Config, tokenizer: LoadedTokenizer, ds_config: dict | None) -> nn.Module:
    """Continue from a Hugging Face folder; grow the embedding when the tokenizer grew."""
    from transformers.integrations import HfDeepSpeedConfig

    keep_alive = HfDeepSpeedConfig(ds_config) if ds_config else None  # makes from_pretrained ZeRO-3 aware
    hf = cls.from_pretrained(config.model.init_from, attn_implementation=config.model.attention)
    family = "gpt2" if hf.config.model_type == "gpt2" else "bert" if hf.config.model_type == "bert" else None
    if family != get_preset(config.model.preset).family:
        raise ValueError(f"model.init_from={config.model.init_from} is a {hf.config.model_type} model, but "
                         f"model.preset={config.model.preset} asks for {get_preset(config.model.preset).family}")
    vocab = hf.get_input_embeddings().num_embeddings if not ds_config else hf.config.vocab_size
    if vocab < tokenizer.vocab_size:
        target = padded_vocab_size(tokenizer.vocab_size, config.model.vocab_multiple)
        log.warning("%s has %d embedding rows but the tokenizer has %d tokens: resizing to %d",
                    config.model.init_from, vocab, tokenizer.vocab_size, target)
        hf.resize_token_embeddings(target)
    del keep_alive
    return hf


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
