"""Named model shapes, and what each model family is, in words the configuration layer can check without
importing torch or transformers (the families' code lives in pretrain/model/families/).

Parameter counts match the published models at their published vocabulary sizes (GPT-2: 50,257; BERT:
30,522; ModernBERT: 50,368; the Llama-style shapes at their own models' vocabularies); in a run the
vocabulary comes from the tokenizer folder."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FamilyTraits:
    """What the configuration and data layers need to know of a model family."""

    objective: str
    """"clm" (packed documents, next-token loss) or "mlm" (sentence pairs, masked-token loss)."""
    published_vocab: int
    """The vocabulary of the family's reference release (the planner's default)."""
    document_mask: bool
    """The default of data.document_mask: packed documents, attention kept within each one."""
    rotary: bool = False
    """Rotary positions: model.rope_theta applies."""
    untied: bool = False
    """The output projection may be a matrix of its own (model.tie_embeddings=false)."""
    own_block: bool = False
    """This project has a block of its own for the family (model.block=own)."""
    mask_prob: float = 0.15
    """MLM: the default of data.mask_prob (BERT's 15%; ModernBERT's 30%)."""
    sentence_order: bool = False
    """MLM: the family has a sentence-order head (data.sentence_order_prediction)."""
    packed_mlm: bool = False
    """MLM: the family can train on packed documents without padding (data.document_mask)."""
    head_width: bool = False
    """Its attention heads may be wider or narrower than hidden / heads (a Llama folder's ``head_dim``)."""


FAMILIES: dict[str, FamilyTraits] = {
    "gpt2": FamilyTraits("clm", 50257, document_mask=False, own_block=True),
    "bert": FamilyTraits("mlm", 30522, document_mask=False, sentence_order=True),
    "llama": FamilyTraits("clm", 32000, document_mask=True, rotary=True, untied=True, head_width=True),
    "modernbert": FamilyTraits("mlm", 50368, document_mask=True, rotary=True, mask_prob=0.3, packed_mlm=True),
}
PUBLISHED_VOCAB = {name: traits.published_vocab for name, traits in FAMILIES.items()}


@dataclass(frozen=True)
class Preset:
    name: str
    family: str  # a key of FAMILIES: "gpt2", "bert", "llama", "modernbert"
    layers: int
    hidden: int
    heads: int
    max_positions: int
    published_params: int | None = None  # as reported for the released model, with its vocabulary
    kv_heads: int | None = None  # grouped-query attention: key/value heads (default: one per query head)
    ffn: int | None = None  # the MLP's inner width (default: 4 x hidden)
    vocab: int | None = None  # the released model's vocabulary (default: the family's)
    rope_theta: float = 10000.0  # rotary families: the base of the rotary frequencies (ModernBERT: its global layers')
    tie_embeddings: bool = True  # the output projection shares the token embedding
    head_size: int | None = None  # each attention head's width (default: hidden / heads); a Llama folder's
    # head_dim, which may differ (the pruned Llama-3.1-Minitron-4B-Width: 3,072 wide, 32 heads of 128)

    def __post_init__(self) -> None:
        if self.head_size is not None and not self.traits.head_width:
            raise ValueError(f"preset {self.name}: the {self.family} family's heads are hidden / heads wide; "
                             "head_size would be counted but never built")

    @property
    def traits(self) -> FamilyTraits:
        return FAMILIES[self.family]

    @property
    def objective(self) -> str:
        return self.traits.objective

    @property
    def ffn_hidden(self) -> int:
        return self.ffn or 4 * self.hidden

    @property
    def key_value_heads(self) -> int:
        return self.kv_heads or self.heads

    @property
    def head_dim(self) -> int:
        """The width of each attention head the model has: head_size, or hidden / heads."""
        return self.head_size or self.hidden // self.heads

    @property
    def attention_width(self) -> int:
        """The width of the queries and of the attention output: heads x head_dim (the hidden size by default)."""
        return self.heads * self.head_dim

    @property
    def published_vocab(self) -> int:
        return self.vocab or self.traits.published_vocab


PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset("gpt2-small", "gpt2", 12, 768, 12, 1024, 124_439_808),
    Preset("gpt2-medium", "gpt2", 24, 1024, 16, 1024, 354_823_168),
    Preset("gpt2-large", "gpt2", 36, 1280, 20, 1024, 774_030_080),
    Preset("gpt2-xl", "gpt2", 48, 1600, 25, 1024, 1_557_611_200),
    Preset("bert-base", "bert", 12, 768, 12, 512, 110_000_000),
    Preset("bert-large", "bert", 24, 1024, 16, 512, 340_000_000),
    Preset("tiny-gpt2", "gpt2", 2, 64, 2, 512),
    Preset("tiny-bert", "bert", 2, 64, 2, 512),
    # Llama-style decoders: RMSNorm, rotary positions, SwiGLU, grouped-query attention, no biases.
    # 125m and 350m: MobileLLM-125M / -350M's deep-and-thin shapes (Liu et al. 2024), which SmolLM-135M /
    # -360M took (tied embeddings, vocabulary 49,152); 1b: TinyLlama-1.1B (Llama 2's vocabulary, untied).
    Preset("llama-tiny", "llama", 2, 64, 4, 512, kv_heads=2, ffn=176),
    Preset("llama-125m", "llama", 30, 576, 9, 2048, 134_515_008, kv_heads=3, ffn=1536, vocab=49152),
    Preset("llama-350m", "llama", 32, 960, 15, 2048, 361_821_120, kv_heads=5, ffn=2560, vocab=49152),
    Preset("llama-1b", "llama", 22, 2048, 32, 2048, 1_100_048_384, kv_heads=4, ffn=5632, vocab=32000,
           tie_embeddings=False),
    # ModernBERT (Warner et al. 2024): pre-norm, GeGLU, no biases, rotary positions (global layers: base 160,000;
    # local: 10,000), a 128-token window in all layers but every third. Published as 149M and 395M: the
    # released ModernBertForMaskedLM checkpoints hold 149,655,232 and 395,881,664 (vocabulary 50,368).
    Preset("modernbert-tiny", "modernbert", 3, 64, 4, 512, ffn=96, rope_theta=160000.0),
    Preset("modernbert-base", "modernbert", 22, 768, 12, 8192, 149_000_000, ffn=1152, rope_theta=160000.0),
    Preset("modernbert-large", "modernbert", 28, 1024, 16, 8192, 395_000_000, ffn=2624, rope_theta=160000.0),
)}


def get_preset(name: str | Preset) -> Preset:
    """The preset of that name; a shape given as such is its own (a model.init_from folder's)."""
    if isinstance(name, Preset):
        return name
    try:
        return PRESETS[name]
    except KeyError:
        raise KeyError(f"unknown model.preset {name!r}; choose one of {', '.join(PRESETS)}") from None


def document_mask_default(preset_name: str) -> bool:
    """data.document_mask when the config leaves it unset: the preset's family's default (off for an
    unknown preset, which validation reports)."""
    preset = PRESETS.get(preset_name)
    return preset is not None and preset.traits.document_mask


def mask_prob_default(preset_name: str) -> float:
    """data.mask_prob when the config leaves it unset: the preset's family's default (BERT's 0.15 for an
    unknown preset, which validation reports)."""
    preset = PRESETS.get(preset_name)
    return preset.traits.mask_prob if preset is not None else FamilyTraits("mlm", 0, False).mask_prob
