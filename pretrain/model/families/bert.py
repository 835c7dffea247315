"""BERT: transformers' BertForMaskedLM (or BertForPreTraining with sentence-order prediction), trained on
sentence pairs with the masked-token loss over a fixed number of predicted positions per sample."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from pretrain.model.families.base import ModelFamily
from pretrain.model.families.masks import mask_dtype
from pretrain.presets import Preset
from pretrain.tokenization.specials import ROLES

# bytes a BertLayer saves for backward per (token x hidden), measured (tests/test_planner.py)
SAVED_PER_TOKEN_HIDDEN = {"half": 32.25, "autocast": 43.4, "fp32": 64.4}


class BertFamily(ModelFamily):
    name = "bert"
    model_types = ("bert",)
    special_roles = ("cls", "sep", "mask", "pad")
    tokenizer_roles = ROLES  # also unk: a WordPiece needs one to encode, and random replacement skips it
    sequence_wrap = ("cls", "sep")

    def hf_config(self, shape: Preset, vocab_size: int, special_ids: Mapping[str, int], dropout: float = 0.0,
                  attention: str = "sdpa"):
        from transformers.models.bert.configuration_bert import BertConfig

        return BertConfig(
            vocab_size=vocab_size, hidden_size=shape.hidden, num_hidden_layers=shape.layers,
            num_attention_heads=shape.heads, intermediate_size=shape.ffn_hidden,
            max_position_embeddings=shape.max_positions, hidden_dropout_prob=dropout,
            attention_probs_dropout_prob=dropout, pad_token_id=special_ids.get("pad", 0), type_vocab_size=2,
            tie_word_embeddings=True, attn_implementation=attention,
        )

    def model_class(self, sentence_order: bool = False) -> type[nn.Module]:
        """BertForPreTraining (with sentence-order prediction) or BertForMaskedLM; transformers' BERT module
        alone takes seconds to import, so only here."""
        from transformers.models.bert.modeling_bert import BertForMaskedLM, BertForPreTraining

        return BertForPreTraining if sentence_order else BertForMaskedLM

    def architecture_class(self, architecture: str) -> type[nn.Module]:
        from transformers.models.bert import modeling_bert

        return getattr(modeling_bert, architecture)

    def block_class(self) -> type[nn.Module]:
        from transformers.models.bert.modeling_bert import BertLayer

        return BertLayer

    def blocks(self, hf: nn.Module) -> nn.ModuleList:
        return hf.bert.encoder.layer

    def shape_of(self, config) -> Preset:
        return Preset("from-config", self.name, config.num_hidden_layers, config.hidden_size,
                      config.num_attention_heads, config.max_position_embeddings, ffn=config.intermediate_size)

    def forward(self, model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """The loss over the predicted positions: a fixed number per sample (padded with position 0, label
        -100), gathered, so no boolean indexing asks the GPU how many there are."""
        hf = model.hf
        bert_out = hf.bert(input_ids=batch["input_ids"], token_type_ids=batch["token_type_ids"],
                           attention_mask=self.padding_mask(hf, batch.get("attention_mask")))
        hidden = bert_out.last_hidden_state
        positions = batch["masked_positions"]  # [batch, most predictions]
        picked = hidden.gather(1, positions[..., None].expand(-1, -1, hidden.shape[-1]))
        labels = batch["labels"].gather(1, positions)
        transformed = hf.cls.predictions.transform(picked.reshape(-1, picked.shape[-1]))
        loss, count = model.head(transformed, labels.reshape(-1))
        if "sop_label" in batch:
            sop_logits = hf.cls.seq_relationship(bert_out.pooler_output)
            loss = loss + nn.functional.cross_entropy(sop_logits.float(), batch["sop_label"])
        return loss, count

    @staticmethod
    def padding_mask(hf: nn.Module, mask: torch.Tensor | None) -> torch.Tensor | None:
        """[batch, 1, query, key] as transformers takes it ready-made (it would otherwise ask the GPU whether
        the 2-D mask is all ones: a host sync); boolean for SDPA, additive for eager attention. None when
        the batch has no padding (the collate function drops an all-ones mask), so SDPA can use its flash
        kernel."""
        if mask is None:
            return None
        length = mask.shape[1]
        keep = mask[:, None, None, :].bool().expand(-1, 1, length, -1)
        if hf.config._attn_implementation == "sdpa":
            return keep
        dtype = mask_dtype(hf.get_input_embeddings().weight)
        return torch.zeros((), dtype=dtype, device=mask.device).masked_fill(~keep, torch.finfo(dtype).min)

    def saved_per_token(self, shape: Preset, mode: str, attention: str = "sdpa", masked: bool = False) -> float:
        return SAVED_PER_TOKEN_HIDDEN[mode] * shape.hidden

    def mask_bytes(self, attention: str, document_mask: bool, mode: str) -> float:
        return 1.0  # the boolean padding mask, whenever a batch has padding
