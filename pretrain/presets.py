"""Named model shapes. Parameter counts match the published models at their published vocabulary
sizes (GPT-2: 50,257; BERT: 30,522); in a run the vocabulary comes from the tokenizer folder."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Preset:
    name: str
    family: str  # "gpt2" (causal LM) or "bert" (masked LM)
    layers: int
    hidden: int
    heads: int
    max_positions: int
    published_params: int | None = None  # as reported for the released model, with its vocabulary

    @property
    def objective(self) -> str:
        return "clm" if self.family == "gpt2" else "mlm"

    @property
    def ffn_hidden(self) -> int:
        return 4 * self.hidden


PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset("gpt2-small", "gpt2", 12, 768, 12, 1024, 124_439_808),
    Preset("gpt2-medium", "gpt2", 24, 1024, 16, 1024, 354_823_168),
    Preset("gpt2-large", "gpt2", 36, 1280, 20, 1024, 774_030_080),
    Preset("gpt2-xl", "gpt2", 48, 1600, 25, 1024, 1_557_611_200),
    Preset("bert-base", "bert", 12, 768, 12, 512, 110_000_000),
    Preset("bert-large", "bert", 24, 1024, 16, 512, 340_000_000),
    Preset("tiny-gpt2", "gpt2", 2, 64, 2, 512),
    Preset("tiny-bert", "bert", 2, 64, 2, 512),
)}
PUBLISHED_VOCAB = {"gpt2": 50257, "bert": 30522}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise KeyError(f"unknown model.preset {name!r}; choose one of {', '.join(PRESETS)}") from None
