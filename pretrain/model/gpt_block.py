"""A compact GPT-2 block of this project's own, a drop-in for transformers' ``GPT2Block``.

It takes over the Hugging Face block's submodules (``ln_1``, ``attn.c_attn``, ``attn.c_proj``, ``ln_2``,
``mlp.c_fc``, ``mlp.c_proj`` and their dropouts), so parameter names, shapes and the Conv1D ``[in, out]``
weight layout are unchanged and a checkpoint still exports as a plain ``GPT2LMHeadModel``. Only the
forward is new: one SDPA call with ``is_causal`` (the flash kernel), no attention-interface dispatch, no
cache handling. ``model.block=own`` selects it; ``benchmarks/mfu_check.sh`` times it against the
Hugging Face block.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F
from transformers.modeling_layers import GradientCheckpointingLayer


class CompactGPT2Block(GradientCheckpointingLayer):
    """Pre-norm causal self-attention and a tanh-GELU MLP, each with a residual connection."""

    def __init__(self, hf_block: torch.nn.Module) -> None:
        super().__init__()
        self.ln_1, self.attn, self.ln_2, self.mlp = hf_block.ln_1, hf_block.attn, hf_block.ln_2, hf_block.mlp
        self.heads = hf_block.attn.num_heads
        self.attention_dropout = hf_block.attn.attn_dropout.p

    def forward(self, hidden_states: torch.Tensor, cache=None, attention_mask: torch.Tensor | None = None,
                encoder_hidden_states=None, **kwargs) -> torch.Tensor:
        batch, length, width = hidden_states.shape
        qkv = self.attn.c_attn(self.ln_1(hidden_states)).view(batch, length, 3, self.heads, width // self.heads)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [batch, heads, length, head size]
        attended = F.scaled_dot_product_attention(
            query, key, value, attn_mask=attention_mask, is_causal=attention_mask is None,
            dropout_p=self.attention_dropout if self.training else 0.0)
        attended = attended.transpose(1, 2).reshape(batch, length, width)
        hidden_states = hidden_states + self.attn.resid_dropout(self.attn.c_proj(attended))
        inner = F.gelu(self.mlp.c_fc(self.ln_2(hidden_states)), approximate="tanh")
        return hidden_states + self.mlp.dropout(self.mlp.c_proj(inner))
