"""What every model family gives the rest of the project (as torchtitan's TrainSpec does for its models).

A family is one module (gpt2.py, bert.py, llama.py) holding one ``ModelFamily`` subclass; the registry in
``pretrain.model.families`` maps the family names of pretrain/presets.py to them. Callers ask the family,
never test its name:

  * the builder: the transformers config and model class, the transformer blocks, weight initialization;
  * the loss: ``forward(model, batch) -> (mean loss, labelled tokens)`` (``PretrainModel.forward``);
  * the planner and MFU: FLOPs per token, the bytes a block saves for backward, parameter shapes;
  * export and import: the model_type, the Hugging Face class by architecture name, a generation config;
  * the tokenizer: the special-token roles the objective needs.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from pretrain.presets import Preset

log = logging.getLogger(__name__)
FLASH = "flash_attention_2"  # transformers' name for FlashAttention (its varlen kernel with cu_seqlens)
# GPT-2's and BERT's embeddings and final LayerNorm, bytes per (token x hidden) by precision mode (measured)
SAVED_OUTSIDE_PER_TOKEN_HIDDEN = {"half": 2.2, "autocast": 4.3, "fp32": 4.4}
MASK_BYTES = {"half": 2, "autocast": 2, "fp32": 4}  # an additive mask in the compute precision, per element
ROTARY_BYTES = {"fp32": 4, "autocast": 4, "half": 2}  # rotary cos and sin per element, in the embedding's precision
ATTENTION_PROBABILITIES = {"half": 2, "autocast": 6, "fp32": 4}  # GPT-2's and BERT's eager softmax, per element


@dataclass(frozen=True)
class Attention:
    """How a model's blocks attend: ``kind`` is the transformers attention implementation ("sdpa", "eager",
    "flash_attention_2"); ``document_mask``: packed documents never attend to each other."""

    kind: str = "sdpa"
    document_mask: bool = False


class ModelFamily:
    """The interface; each family overrides what differs (the defaults fit a standard pre-norm transformer)."""

    name: str = ""
    model_types: tuple[str, ...] = ()
    """transformers' ``model_type`` values this family builds and imports (model.init_from, export)."""
    special_roles: tuple[str, ...] = ()
    """The tokenizer's special-token roles the model's config names (pretrain/tokenization/specials.py's ROLES)."""
    tokenizer_roles: tuple[str, ...] = ("eod",)
    """The roles a run's tokenizer load adds where the tokenizer lacks them, and no other: a causal LM's end of
    document alone, so that a release keeps its vocabulary."""
    generates: bool = False
    """A decoder: its export carries a generation config."""
    sequence_wrap: tuple[str, str] | None = None
    """The special-token roles the trainer puts before and after each input sequence (an encoder's [CLS] and
    [SEP]); an exported tokenizer adds them as the model saw them. None: the text alone (decoders)."""
    gated_mlp: bool = False
    """The MLP has a gate (SwiGLU, GeGLU): three matrices instead of two (FLOPs)."""
    varlen_packing: bool = False
    """The trunk runs packed documents through FlashAttention's varlen kernel (``cu_seqlens``) where installed."""
    init_cutoff: float | None = None
    """Weights start from a normal truncated at this many standard deviations either side (None: not truncated)."""

    # ------------------------------------------------------------------------------------------- builder
    def hf_config(self, shape: Preset, vocab_size: int, special_ids: Mapping[str, int], dropout: float = 0.0,
                  attention: str = "sdpa"):
        """A transformers config for a fresh model of ``shape`` with ``vocab_size`` embedding rows."""
        raise NotImplementedError

    def model_class(self, sentence_order: bool = False) -> type[nn.Module]:
        """The transformers class that is trained and exported (only the family's module is imported)."""
        raise NotImplementedError

    def architecture_class(self, architecture: str) -> type[nn.Module]:
        """The transformers class named ``architecture`` (a saved config's ``architectures[0]``)."""
        raise NotImplementedError

    def block_class(self) -> type[nn.Module]:
        """The class of one transformer block (what recomputes, compiles, and ZeRO-3 gathers whole)."""
        raise NotImplementedError

    def blocks(self, hf: nn.Module) -> nn.ModuleList:
        """The model's list of transformer blocks."""
        raise NotImplementedError

    def shape_of(self, config) -> Preset:
        """The shape of a built model from its transformers config (a folder's model may differ from its preset)."""
        raise NotImplementedError

    def init_std(self, module_name: str, std: float, layers: int) -> float:
        """The standard deviation a weight matrix or embedding of ``module_name`` starts from."""
        return std

    def is_norm(self, module: nn.Module) -> bool:
        """Normalization layers start at weight 1 (and bias 0)."""
        return isinstance(module, nn.LayerNorm)

    def use_own_blocks(self, hf: nn.Module) -> list[type[nn.Module]]:
        """Swap in this project's own blocks (model.block=own); returns their classes."""
        raise ValueError(f"model.block=own: the {self.name} family has no block of this project's own")

    def configure_attention(self, hf: nn.Module, document_mask: bool, on_gpu: bool) -> Attention:
        """The attention the blocks will run (set on ``hf`` where the kernel changes): for packed documents on a
        GPU, FlashAttention's varlen kernel where the family's trunk takes it and flash-attn is installed (it
        skips the masked blocks instead of reading a [seq x seq] mask), else what the config chose."""
        kind = hf.config._attn_implementation
        if document_mask and on_gpu and kind == "sdpa" and self.varlen_packing:
            try:
                hf.set_attn_implementation(FLASH)
                kind = FLASH
                log.info("document mask: FlashAttention's varlen kernel")
            except (ImportError, ValueError) as exc:
                log.info("document mask: SDPA with a mask built on the device (flash-attn unavailable: %s)",
                         (str(exc).splitlines() or [""])[0][:120])
        elif document_mask:
            log.info("document mask: %s attention with a mask built on the device", kind)
        return Attention(kind, document_mask)

    # ----------------------------------------------------------------------------------------- the loss
    def forward(self, model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean loss, labelled tokens) of ``batch`` as tensors, reading nothing back to the host."""
        raise NotImplementedError

    # ------------------------------------------------------------------------------ FLOPs and memory
    def flops(self, shape: Preset, seq_len: int, vocab: int, tokens: int, recomputed_layers: int = 0,
              head_tokens: int | None = None) -> float:
        """FLOPs of one forward and backward over ``tokens`` tokens (Megatron's accounting; see
        pretrain.metrics.transformer_flops): model FLOPs, plus hardware FLOPs for ``recomputed_layers``."""
        from pretrain.metrics import transformer_flops

        return transformer_flops(shape.layers, shape.hidden, seq_len, vocab, tokens, recomputed_layers, head_tokens,
                                 kv_hidden=shape.key_value_heads * shape.head_dim, ffn_hidden=shape.ffn_hidden,
                                 gated_mlp=self.gated_mlp, attention_width=shape.attention_width)

    def saved_per_token(self, shape: Preset, mode: str, attention: str = "sdpa", masked: bool = False) -> float:
        """Bytes one block saves for backward per token, apart from eager attention's probabilities (``mode``:
        "half", "autocast" or "fp32", see pretrain.planner.precision_mode; ``attention``: "sdpa" (its flash /
        memory-efficient kernels) or "eager"; ``masked``: the blocks get an attention mask), as measured on
        CPU in tests/test_planner.py."""
        raise NotImplementedError

    def attention_probability_bytes(self, mode: str) -> float:
        """Eager attention: bytes it keeps per head x key x query (the softmax, and its cast)."""
        return ATTENTION_PROBABILITIES[mode]

    def saved_outside_per_token(self, shape: Preset, mode: str, document_mask: bool = False) -> float:
        """Bytes the embeddings and the final norm save for backward per token (measured as above)."""
        return SAVED_OUTSIDE_PER_TOKEN_HIDDEN[mode] * shape.hidden

    def mask_bytes(self, attention: str, document_mask: bool, mode: str) -> float:
        """Bytes per key per token of the attention mask forward builds once and keeps: an additive document
        mask in the compute precision; GPT-2's eager attention counted as a boolean causal mask."""
        if document_mask:
            return MASK_BYTES[mode]
        return 1.0 if attention == "eager" else 0.0

    # ------------------------------------------------------------------------------- export and import
    def generation_config(self, special_ids: Mapping[str, int]):
        """A transformers GenerationConfig for the exported folder: a decoder's (the tokenizer's BOS where it has
        one, else end-of-text, as bos; end-of-text as eos; its pad, else end-of-text), or None (an encoder generates nothing)."""
        if not self.generates:
            return None
        from transformers import GenerationConfig

        eod = special_ids["eod"]  # also the pad of a tokenizer without one (GPT-2's, Llama 3's), as generate's own
        return GenerationConfig(bos_token_id=special_ids.get("bos", eod), eos_token_id=eod,
                                pad_token_id=special_ids.get("pad", eod))

    def check_special_ids(self, special_ids: Mapping[str, int]) -> None:
        """Refuse a tokenizer without a special token this family's objective needs."""
        missing = [role for role in self.special_roles if role not in special_ids]
        if missing:
            raise ValueError(f"the {self.name} family needs the special tokens {', '.join(missing)}, which the "
                             "tokenizer does not give")


def scaled_output_std(std: float, layers: int) -> float:
    """GPT-2's (and Megatron's) residual output projections: std / sqrt(2 x layers), so the residual stream's
    variance does not grow with depth."""
    return std / math.sqrt(2 * layers)
