"""Model families behind one interface (``ModelFamily``, base.py): one module each, one registry here.

``get_family(name)`` takes a family name of pretrain/presets.py; ``family_for_model_type`` a transformers
``model_type`` (a Hugging Face folder to continue from or export). Adding a family is a module and a line
in ``FAMILIES`` (and its traits in pretrain/presets.py)."""

from __future__ import annotations

from types import MappingProxyType

from pretrain.model.families.base import Attention, ModelFamily
from pretrain.model.families.bert import BertFamily
from pretrain.model.families.gpt2 import GPT2Family
from pretrain.model.families.llama import LlamaFamily
from pretrain.model.families.modernbert import ModernBertFamily

FAMILIES: MappingProxyType[str, ModelFamily] = MappingProxyType(
    {family.name: family for family in (GPT2Family(), BertFamily(), LlamaFamily(), ModernBertFamily())})


def get_family(name: str) -> ModelFamily:
    try:
        return FAMILIES[name]
    except KeyError:
        raise KeyError(f"unknown model family {name!r} (families: {', '.join(FAMILIES)})") from None


def family_for_model_type(model_type: str) -> ModelFamily | None:
    """The family that builds transformers models of ``model_type``, or None."""
    return next((family for family in FAMILIES.values() if model_type in family.model_types), None)


__all__ = ["FAMILIES", "Attention", "ModelFamily", "family_for_model_type", "get_family"]
