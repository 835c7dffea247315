"""GPT-2: transformers' GPT2LMHeadModel (learned positions, LayerNorm, GELU MLP, tied embeddings), trained
on packed documents with the next-token loss."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from pretrain.model.families.base import ModelFamily, scaled_output_std
from pretrain.model.families.masks import decoder_mask, mask_dtype
from pretrain.presets import Preset

# bytes a GPT2Block saves for backward per (token x hidden), measured (tests/test_planner.py): half-precision
# weights, bf16 autocast over fp32 weights (the residual stream and the norms stay fp32), fp32
SAVED_PER_TOKEN_HIDDEN = {"half": 32.25, "autocast": 39.4, "fp32": 64.4}


class GPT2Family(ModelFamily):
    name = "gpt2"
    model_types = ("gpt2",)
    special_roles = ("eod",)
    generates = True

    def hf_config(self, shape: Preset, vocab_size: int, special_ids: Mapping[str, int], dropout: float = 0.0,
                  attention: str = "sdpa"):
        from transformers.models.gpt2.configuration_gpt2 import GPT2Config

        eod = special_ids.get("eod")
        return GPT2Config(
            vocab_size=vocab_size, n_positions=shape.max_positions, n_embd=shape.hidden, n_layer=shape.layers,
            n_head=shape.heads, n_inner=shape.ffn_hidden, resid_pdrop=dropout, embd_pdrop=dropout,
            attn_pdrop=dropout, bos_token_id=special_ids.get("bos", eod), eos_token_id=eod, pad_token_id=special_ids.get("pad"),
            tie_word_embeddings=True, attn_implementation=attention, use_cache=False,
            activation_function="gelu_pytorch_tanh",  # GPT-2's tanh GELU as one fused kernel, not five elementwise ops
        )

    def model_class(self, sentence_order: bool = False) -> type[nn.Module]:
        from transformers.models.gpt2.modeling_gpt2 import GPT2LMHeadModel

        return GPT2LMHeadModel

    def architecture_class(self, architecture: str) -> type[nn.Module]:
        from transformers.models.gpt2 import modeling_gpt2

        return getattr(modeling_gpt2, architecture)

    def block_class(self) -> type[nn.Module]:
        from transformers.models.gpt2.modeling_gpt2 import GPT2Block

        return GPT2Block

    def blocks(self, hf: nn.Module) -> nn.ModuleList:
        return hf.transformer.h

    def shape_of(self, config) -> Preset:
        return Preset("from-config", self.name, config.n_layer, config.n_embd, config.n_head, config.n_positions,
                      ffn=config.n_inner)

    def init_std(self, module_name: str, std: float, layers: int) -> float:
        return scaled_output_std(std, layers) if module_name.endswith("c_proj") else std

    def use_own_blocks(self, hf: nn.Module) -> list[type[nn.Module]]:
        from pretrain.model.gpt_block import CompactGPT2Block

        blocks = self.blocks(hf)
        for index, block in enumerate(blocks):
            blocks[index] = CompactGPT2Block(block)
        return [CompactGPT2Block]

    def forward(self, model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = batch["tokens"]
        hidden = self.trunk(model.hf, tokens[:, :-1], batch.get("position_ids"))
        return model.head(hidden.reshape(-1, hidden.shape[-1]), tokens[:, 1:].reshape(-1))

    def trunk(self, hf: nn.Module, input_ids: torch.Tensor, position_ids: torch.Tensor | None = None) -> torch.Tensor:
        """GPT2Model's forward for training, module by module: embeddings, blocks, final norm. With no document
        mask the blocks get no mask (SDPA's causal flash kernel); eager attention gets the causal mask, which
        it would otherwise not apply. transformers' own forward also looks for padding in the inputs and for
        packed sequences in the positions, two reads of GPU values per step."""
        trunk = hf.transformer
        positions = torch.arange(input_ids.shape[1], device=input_ids.device) if position_ids is None else position_ids
        hidden = trunk.drop(trunk.wte(input_ids) + trunk.wpe(positions))
        mask = decoder_mask(input_ids.shape[1], input_ids.device, hf.config._attn_implementation,
                            mask_dtype(trunk.wte.weight), position_ids)
        for block in trunk.h:
            hidden = block(hidden, attention_mask=mask)
        return trunk.ln_f(hidden)

    def saved_per_token(self, shape: Preset, mode: str, attention: str = "sdpa", masked: bool = False) -> float:
        return SAVED_PER_TOKEN_HIDDEN[mode] * shape.hidden

