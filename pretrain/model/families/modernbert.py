"""ModernBERT (Warner et al. 2024): transformers' ModernBertForMaskedLM, a pre-norm encoder with GeGLU MLPs, no
biases, LayerNorm without bias, and rotary positions; every third layer (the first included) attends globally
(rotary base 160,000), the others within a 128-token window (64 tokens either side, base 10,000). Trained with
the masked-token loss over a fixed number of predicted positions per sample, as BERT is, 30% of the tokens
masked by default, no sentence-order prediction.

Unpadded batches (data.document_mask, on by default here): whole documents packed one after another
(pretrain/data/packed_mlm.py), every position a real token, with positions restarting at each document and
attention kept within it, as the reference implementation's unpadding and sequence packing do. On a GPU with
flash-attn installed the blocks run FlashAttention's varlen kernel (the sequence boundaries made on the host by
the collate function), which computes no masked block; else SDPA with masks built on the device.

Padded sentence pairs (data.document_mask=false): transformers 5.24's ModernBERT does not unpad (the reference
removes the padding tokens and runs the varlen kernel; transformers keeps the padded batch and masks it). The
trunk here does the same, building both masks on the device from the batch's attention mask: none for the
global layers of a batch without padding (SDPA's flash kernel), and for the local layers the band (with the
padding) as one additive mask shared by every local layer.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from pretrain.model.families.base import FLASH, MASK_BYTES, ROTARY_BYTES, ModelFamily, scaled_output_std
from pretrain.model.families.masks import mask_dtype, varlen_arguments
from pretrain.presets import Preset
from pretrain.tokenization.specials import ROLES

NORM_EPS = 1e-5
LOCAL_WINDOW = 128  # tokens a local layer sees: 64 either side (transformers' config.local_attention)
LOCAL_ROPE_THETA = 10000.0  # the local layers' rotary base (the global layers': the preset's rope_theta)
GLOBAL_EVERY = 3  # layers 0, 3, 6, ... attend globally
GLOBAL, LOCAL = "full_attention", "sliding_attention"  # transformers' layer types

# Bytes a ModernBertEncoderLayer saves for backward per token, as (per hidden, per MLP width, per token) by
# precision mode, plus SDPA's fp32 logsumexp per head: measured with saved-tensor hooks on the trunk below
# (tests/test_planner.py), fitted over the hidden width, the MLP width, the heads and the depth (each exact).
# The MLP keeps four ffn-wide tensors (GELU's input and output, the gate, the product: Wi's output is its
# first two halves); the per-token constant is the two LayerNorms' mean and rstd (fp32; bf16 with bf16
# weights). Under autocast the norms, the residual stream and the rotation run in fp32 and the projections
# keep bf16 copies of their inputs.
SAVED_PER_TOKEN = {"fp32": (32.0, 16.0, 16.0), "autocast": (20.0, 8.0, 16.0), "half": (16.0, 8.0, 8.0)}
# outside the blocks, (per hidden, per token): the embedding norm's and the final norm's inputs and statistics
# and the embedding's indices. The first block's attention norm is an identity, but the planner counts every
# block alike (and cannot tell whether the first one recomputes): one norm (4h + 8 bytes per token in fp32)
# over when it does not, never under. Not counted: the prediction head's dense, GELU and norm on the predicted
# rows (about 3 x 4h bytes per predicted token in fp32: a few percent of a block's; the planner's head term
# counts the logits only).
SAVED_OUTSIDE = {"fp32": (8.0, 24.0), "autocast": (8.0, 24.0), "half": (4.0, 16.0)}


class ModernBertFamily(ModelFamily):
    name = "modernbert"
    model_types = ("modernbert",)
    special_roles = ("cls", "sep", "mask", "pad")
    tokenizer_roles = ROLES  # also unk: a WordPiece needs one to encode, and random replacement skips it
    sequence_wrap = ("cls", "sep")
    gated_mlp = True
    varlen_packing = True
    init_cutoff = 2.0  # the reference's and transformers' config (initializer_cutoff_factor)

    def hf_config(self, shape: Preset, vocab_size: int, special_ids: Mapping[str, int], dropout: float = 0.0,
                  attention: str = "sdpa"):
        from transformers.models.modernbert.configuration_modernbert import ModernBertConfig

        # the special ids come from the tokenizer (the planner builds with none: no padding row then)
        cls, sep = special_ids.get("cls"), special_ids.get("sep")
        return ModernBertConfig(
            vocab_size=vocab_size, hidden_size=shape.hidden, intermediate_size=shape.ffn_hidden,
            num_hidden_layers=shape.layers, num_attention_heads=shape.heads,
            max_position_embeddings=shape.max_positions, hidden_activation="gelu", norm_eps=NORM_EPS,
            norm_bias=False, attention_bias=False, mlp_bias=False, decoder_bias=True, classifier_bias=False,
            layer_types=[LOCAL if index % GLOBAL_EVERY else GLOBAL for index in range(shape.layers)],
            local_attention=LOCAL_WINDOW,
            rope_parameters={GLOBAL: {"rope_type": "default", "rope_theta": float(shape.rope_theta)},
                             LOCAL: {"rope_type": "default", "rope_theta": LOCAL_ROPE_THETA}},
            embedding_dropout=dropout, attention_dropout=dropout, mlp_dropout=dropout,
            pad_token_id=special_ids.get("pad"), cls_token_id=cls, sep_token_id=sep, bos_token_id=cls,
            eos_token_id=sep, tie_word_embeddings=True, attn_implementation=attention,
            classifier_pooling="mean",  # as ModernBERT-base and -large ship: a classifier head pools every token
        )

    def model_class(self, sentence_order: bool = False) -> type[nn.Module]:
        if sentence_order:
            raise ValueError("the modernbert family has no sentence-order head (data.sentence_order_prediction)")
        from transformers.models.modernbert.modeling_modernbert import ModernBertForMaskedLM

        return ModernBertForMaskedLM

    def architecture_class(self, architecture: str) -> type[nn.Module]:
        from transformers.models.modernbert import modeling_modernbert

        return getattr(modeling_modernbert, architecture)

    def block_class(self) -> type[nn.Module]:
        from transformers.models.modernbert.modeling_modernbert import ModernBertEncoderLayer

        return ModernBertEncoderLayer

    def blocks(self, hf: nn.Module) -> nn.ModuleList:
        return hf.model.layers

    def shape_of(self, config) -> Preset:
        """The global layers' rotary base is the shape's rope_theta (the local layers' is the folder's own)."""
        theta = (config.rope_parameters or {}).get(GLOBAL, {}).get("rope_theta", 160000.0)
        return Preset("from-config", self.name, config.num_hidden_layers, config.hidden_size,
                      config.num_attention_heads, config.max_position_embeddings, ffn=config.intermediate_size,
                      rope_theta=theta)

    def init_std(self, module_name: str, std: float, layers: int) -> float:
        """As transformers initializes ModernBERT (a normal truncated at 2 std, ``init_cutoff``): the residual
        outputs (attention's and the MLP's Wo) and the prediction head's dense layer at std / sqrt(2 x layers)."""
        return scaled_output_std(std, layers) if module_name.endswith(("Wo", "head.dense")) else std

    # ----------------------------------------------------------------------------------------- the loss
    def forward(self, model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """The loss over the predicted positions, gathered as BERT's (a fixed number per sample, padded with
        position 0 and label -100); the prediction head (dense, GELU, norm) runs on those rows only."""
        hf = model.hf
        hidden = self.trunk(hf, batch["input_ids"], batch.get("attention_mask"), batch.get("position_ids"),
                            batch.get("cu_seqlens"))
        positions = batch["masked_positions"]  # [batch, most predictions]
        picked = hidden.gather(1, positions[..., None].expand(-1, -1, hidden.shape[-1]))
        labels = batch["labels"].gather(1, positions)
        return model.head(hf.head(picked.reshape(-1, picked.shape[-1])), labels.reshape(-1))

    def trunk(self, hf: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
              position_ids: torch.Tensor | None = None, cu_seqlens: torch.Tensor | None = None) -> torch.Tensor:
        """ModernBertModel's forward for training, module by module: embeddings, the rotary tables of each layer
        type, the blocks, the final norm. transformers' own forward asks the GPU whether the padding mask is all
        ones (a read-back); here the masks come from the batch: its padding mask (absent when the batch has no
        padding), or for packed documents their positions (restarting at 0 at each document) and, for the
        varlen kernel, their boundaries. Other kernels on padded batches take transformers' own forward."""
        inner = hf.model
        kind = hf.config._attn_implementation
        varlen = kind == FLASH and position_ids is not None
        if kind not in ("sdpa", "eager") and not varlen:
            return inner(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        hidden = inner.embeddings(input_ids=input_ids)
        length = input_ids.shape[1]
        positions = torch.arange(length, device=input_ids.device)[None] if position_ids is None else position_ids
        extra = {}
        if varlen:
            masks, extra = dict.fromkeys((GLOBAL, LOCAL)), varlen_arguments(cu_seqlens, length)
        else:
            masks = encoder_masks(length, hf.config.sliding_window, attention_mask, input_ids.device,
                                  mask_dtype(inner.embeddings.tok_embeddings.weight), position_ids)
        rotary = {layer_type: rotary_tables(inner.rotary_emb, layer_type, hidden, positions)
                  for layer_type in set(hf.config.layer_types)}
        for layer in inner.layers:
            hidden = layer(hidden, attention_mask=masks[layer.attention_type],
                           position_embeddings=rotary[layer.attention_type], **extra)
        return inner.final_norm(hidden)

    # ------------------------------------------------------------------------------ FLOPs and memory
    def flops(self, shape: Preset, seq_len: int, vocab: int, tokens: int, recomputed_layers: int = 0,
              head_tokens: int | None = None) -> float:
        """The transformer's (attention over the full square, as Megatron counts it: the local layers' masked
        scores are computed too by SDPA with a mask), plus the prediction head's dense layer (h x h) on every
        row that reaches the output projection."""
        rows = tokens if head_tokens is None else head_tokens
        return (super().flops(shape, seq_len, vocab, tokens, recomputed_layers, head_tokens)
                + 6 * shape.hidden * shape.hidden * rows)

    def saved_per_token(self, shape: Preset, mode: str, attention: str = "sdpa", masked: bool = False) -> float:
        per_hidden, per_ffn, per_token = SAVED_PER_TOKEN[mode]
        logsumexp = 4 * shape.heads if attention == "sdpa" else 0
        return per_hidden * shape.hidden + per_ffn * shape.ffn_hidden + per_token + logsumexp

    def attention_probability_bytes(self, mode: str) -> float:
        return 4 if mode == "fp32" else 6  # the softmax taken in fp32, and its cast kept too

    def saved_outside_per_token(self, shape: Preset, mode: str, document_mask: bool = False) -> float:
        """The embedding norm's and the final norm's, and for packed documents the per-sample rotary tables of
        both layer types (cos and sin for each token's own position; without, one table shared by the batch)."""
        per_hidden, per_token = SAVED_OUTSIDE[mode]
        rotary = 2 * 2 * ROTARY_BYTES[mode] * shape.head_dim if document_mask else 0
        return per_hidden * shape.hidden + per_token + rotary

    def mask_bytes(self, attention: str, document_mask: bool, mode: str) -> float:
        """SDPA keeps the local layers' additive mask, [batch, 1, seq, seq] in the compute precision, once (every
        local layer takes the same tensor; without padding it is one [seq, seq] for the batch); the global
        layers' padding mask is [batch, 1, 1, seq], but with packed documents [batch, 1, seq, seq] too: two.
        Eager attention adds them to the scores and keeps nothing."""
        if attention != "sdpa":
            return 0.0
        return 2 * MASK_BYTES[mode] if document_mask else MASK_BYTES[mode]


def encoder_masks(length: int, half_window: int, attention_mask: torch.Tensor | None, device: torch.device,
                  dtype: torch.dtype, position_ids: torch.Tensor | None = None) -> dict[str, torch.Tensor | None]:
    """The additive masks (0 where a query may attend, the dtype's minimum elsewhere) by layer type: the
    global layers' hides the padding (None without), [batch, 1, 1, length]; the local layers' also hides keys
    more than ``half_window`` positions away, [batch or 1, 1, length, length] (the global one when no key is
    that far). With ``position_ids`` (packed documents, restarting at 0 at each one) both also hide the other
    documents' keys: [batch, 1, length, length] each. Built with tensor operations only: nothing read back.
    Additive, not boolean: SDPA would turn a boolean mask into an additive one in every layer and keep each
    copy for backward."""
    keep = None if attention_mask is None else attention_mask[:, None, None, :].bool()  # [batch, 1, 1, key]
    if position_ids is not None:
        document = (position_ids == 0).cumsum(dim=1)
        same = (document[:, :, None] == document[:, None, :])[:, None]  # [batch, 1, query, key]
        keep = same if keep is None else keep & same

    def additive(allowed: torch.Tensor) -> torch.Tensor:
        return torch.zeros((), dtype=dtype, device=device).masked_fill(~allowed, torch.finfo(dtype).min)

    masks: dict[str, torch.Tensor | None] = {GLOBAL: None, LOCAL: None}
    if keep is not None:
        masks[GLOBAL] = additive(keep)  # a padding mask is broadcast over the queries by the kernels
    if length - 1 > half_window:
        index = torch.arange(length, device=device)
        band = ((index[:, None] - index[None, :]).abs() <= half_window)[None, None]  # [1, 1, query, key]
        masks[LOCAL] = additive(band if keep is None else band & keep)
    else:
        masks[LOCAL] = masks[GLOBAL]
    return masks


def rotary_tables(rotary: nn.Module, layer_type: str, hidden: torch.Tensor,
                  positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(cos, sin) of ``layer_type`` for ``positions``, as ModernBertRotaryEmbedding's forward computes them,
    without its ``inv_freq.to(device=...)`` (on the CPU a copy the host-sync probe cannot tell from a
    read-back). Rotary types that rescale with the sequence length go through the module."""
    rope_type = rotary.rope_type[layer_type]
    if "dynamic" in rope_type or rope_type == "longrope":
        return rotary(hidden, positions, layer_type)
    scaling = getattr(rotary, f"{layer_type}_attention_scaling")
    freqs = positions[..., None].float() * getattr(rotary, f"{layer_type}_inv_freq").float()
    angles = torch.cat((freqs, freqs), dim=-1)
    return (angles.cos() * scaling).to(hidden.dtype), (angles.sin() * scaling).to(hidden.dtype)
