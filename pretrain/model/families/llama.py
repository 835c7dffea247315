"""A Llama-style decoder: transformers' LlamaForCausalLM (RMSNorm, rotary positions, SwiGLU MLP, grouped-query
attention, no biases; tied or untied embeddings), trained on packed documents with the next-token loss.

With ``data.document_mask`` (on by default here) each batch carries positions that restart at every
document, and attention stays within a document: FlashAttention's varlen kernel on a GPU where flash-attn is
installed (sequence boundaries made on the host by the collate function), else SDPA with an additive mask
built on the device. ``model.dropout`` is the attention dropout (Llama has no other).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from pretrain.model.families.base import FLASH, MASK_BYTES, ROTARY_BYTES, ModelFamily, scaled_output_std
from pretrain.model.families.masks import decoder_mask, mask_dtype, varlen_arguments
from pretrain.presets import Preset

RMS_NORM_EPS = 1e-5  # Llama 2's, TinyLlama's and SmolLM's

# Bytes a LlamaDecoderLayer saves for backward per token, as (per hidden, per query width (heads x head_dim: the
# rotated queries and the attention output), per key/value width, per MLP width) by precision mode, measured
# with SDPA (tests/test_planner.py) and accounted for: each RMSNorm keeps its input, its normalized value and
# (fp32) its output; q, k, v and the attention output (laid out [batch, seq, heads, dim] in memory: o_proj reads
# it without a copy); the MLP's gate, up, SiLU and product. Under autocast the norms run in fp32 and each
# projection casts its input to bf16 on its own (three for q/k/v, two for gate/up); with bf16 weights (ZeRO)
# each norm computes on an fp32 copy of its input. Plus per token two rsqrt values and SDPA's fp32 logsumexp per
# head. With a mask, transformers repeats the key/value heads for SDPA (GQA on a masked call falls back to the
# slow kernel on GPUs): k and v become as wide as the queries.
SAVED_PER_TOKEN = {"fp32": (24.0, 8.0, 8.0, 16.0), "autocast": (26.0, 4.0, 4.0, 8.0), "half": (16.0, 4.0, 4.0, 8.0)}
# outside the blocks, per token x hidden: the final norm's input and normalized value (fp32 copy under bf16
# weights), plus the embedding's indices and the norm's rsqrt (12 bytes)
SAVED_OUTSIDE = {"fp32": 8.0, "autocast": 8.0, "half": 6.0}


class LlamaFamily(ModelFamily):
    name = "llama"
    model_types = ("llama",)
    special_roles = ("eod",)
    generates = True
    gated_mlp = True
    varlen_packing = True

    def hf_config(self, shape: Preset, vocab_size: int, special_ids: Mapping[str, int], dropout: float = 0.0,
                  attention: str = "sdpa"):
        from transformers.models.llama.configuration_llama import LlamaConfig

        eod = special_ids.get("eod")
        return LlamaConfig(
            vocab_size=vocab_size, hidden_size=shape.hidden, intermediate_size=shape.ffn_hidden,
            num_hidden_layers=shape.layers, num_attention_heads=shape.heads, num_key_value_heads=shape.key_value_heads,
            head_dim=shape.head_dim,
            max_position_embeddings=shape.max_positions, rms_norm_eps=RMS_NORM_EPS, hidden_act="silu",
            rope_parameters={"rope_type": "default", "rope_theta": float(shape.rope_theta)},
            tie_word_embeddings=shape.tie_embeddings, attention_bias=False, mlp_bias=False,
            attention_dropout=dropout, bos_token_id=special_ids.get("bos", eod), eos_token_id=eod, pad_token_id=None,
            attn_implementation=attention, use_cache=False,
        )

    def model_class(self, sentence_order: bool = False) -> type[nn.Module]:
        from transformers.models.llama.modeling_llama import LlamaForCausalLM

        return LlamaForCausalLM

    def architecture_class(self, architecture: str) -> type[nn.Module]:
        from transformers.models.llama import modeling_llama

        return getattr(modeling_llama, architecture)

    def block_class(self) -> type[nn.Module]:
        from transformers.models.llama.modeling_llama import LlamaDecoderLayer

        return LlamaDecoderLayer

    def blocks(self, hf: nn.Module) -> nn.ModuleList:
        return hf.model.layers

    def shape_of(self, config) -> Preset:
        theta = (config.rope_parameters or {}).get("rope_theta", 10000.0)
        return Preset("from-config", self.name, config.num_hidden_layers, config.hidden_size,
                      config.num_attention_heads, config.max_position_embeddings,
                      kv_heads=config.num_key_value_heads, ffn=config.intermediate_size, rope_theta=theta,
                      tie_embeddings=bool(config.tie_word_embeddings),
                      head_size=config.head_dim)  # LlamaConfig's default: hidden / heads

    def init_std(self, module_name: str, std: float, layers: int) -> float:
        """Normal(0, std), the residual outputs (attention's o_proj, the MLP's down_proj) scaled by
        1/sqrt(2 x layers) as GPT-2 and Megatron-LM do."""
        return scaled_output_std(std, layers) if module_name.endswith(("o_proj", "down_proj")) else std

    def is_norm(self, module: nn.Module) -> bool:
        from transformers.models.llama.modeling_llama import LlamaRMSNorm

        return isinstance(module, LlamaRMSNorm)

    def forward(self, model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = batch["tokens"]
        hidden = self.trunk(model.hf, tokens[:, :-1], batch.get("position_ids"), batch.get("cu_seqlens"))
        return model.head(hidden.reshape(-1, hidden.shape[-1]), tokens[:, 1:].reshape(-1))

    def trunk(self, hf: nn.Module, input_ids: torch.Tensor, position_ids: torch.Tensor | None = None,
              cu_seqlens: torch.Tensor | None = None) -> torch.Tensor:
        """LlamaModel's forward for training, module by module: embedding, rotary tables, blocks, final norm.
        transformers' own forward builds its mask by asking whether the inputs hold padding or packed
        sequences (reads of GPU values); here the mask comes from the batch: none (SDPA's causal kernel),
        the document mask, or the varlen kernel's sequence boundaries."""
        inner = hf.model
        length = input_ids.shape[1]
        hidden = inner.embed_tokens(input_ids)
        positions = torch.arange(length, device=input_ids.device)[None] if position_ids is None else position_ids
        rotary = rotary_tables(inner.rotary_emb, hidden, positions)
        kind, extra = hf.config._attn_implementation, {}
        if kind == FLASH and position_ids is not None:
            mask, extra = None, varlen_arguments(cu_seqlens, length)
        else:
            mask = decoder_mask(length, input_ids.device, kind, mask_dtype(inner.embed_tokens.weight), position_ids)
        for layer in inner.layers:
            hidden = layer(hidden, attention_mask=mask, position_embeddings=rotary, **extra)
        return inner.norm(hidden)

    def saved_per_token(self, shape: Preset, mode: str, attention: str = "sdpa", masked: bool = False) -> float:
        per_hidden, per_query, per_kv, per_ffn = SAVED_PER_TOKEN[mode]
        repeated = masked or attention == "eager"  # transformers repeats the key/value heads
        kv_width = shape.attention_width if repeated else shape.key_value_heads * shape.head_dim
        logsumexp = 4 * shape.heads if attention == "sdpa" else 0
        return (per_hidden * shape.hidden + per_query * shape.attention_width + per_kv * kv_width
                + per_ffn * shape.ffn_hidden + 8 + logsumexp)

    def attention_probability_bytes(self, mode: str) -> float:
        return 4 if mode == "fp32" else 6  # transformers' Llama takes the softmax in fp32 and keeps its cast too

    def saved_outside_per_token(self, shape: Preset, mode: str, document_mask: bool = False) -> float:
        """The final norm, and with a document mask the per-sample rotary tables (cos and sin for each
        token's own position; without, one table shared by the batch)."""
        rotary = 2 * ROTARY_BYTES[mode] * shape.head_dim if document_mask else 0
        return SAVED_OUTSIDE[mode] * shape.hidden + 12 + rotary

    def mask_bytes(self, attention: str, document_mask: bool, mode: str) -> float:
        """SDPA keeps the document mask for backward (once: every block takes the same tensor); eager
        attention adds it to the scores and keeps nothing of it."""
        return MASK_BYTES[mode] if document_mask and attention == "sdpa" else 0.0



def rotary_tables(rotary: nn.Module, hidden: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(cos, sin) for ``positions``, as LlamaRotaryEmbedding's forward computes them (its inverse frequencies
    already hold a folder's rope scaling), without its ``inv_freq.to(device=...)``: on a GPU a no-op, on the
    CPU the copy the host-sync probe cannot tell from a read-back. Rotary types that rescale with the
    sequence length ("dynamic", "longrope") go through the module."""
    if "dynamic" in rotary.rope_type or rotary.rope_type == "longrope":
        return rotary(hidden, positions)
    freqs = positions[..., None].float() * rotary.inv_freq.float()
    angles = torch.cat((freqs, freqs), dim=-1)
    return ((angles.cos() * rotary.attention_scaling).to(hidden.dtype),
            (angles.sin() * rotary.attention_scaling).to(hidden.dtype))
