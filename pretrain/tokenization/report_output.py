"""``pretrain-tokenizer-report``'s files: report.md (a person reads it), report.json, chart.png."""

from __future__ import annotations

import json
from pathlib import Path

from pretrain.atomic import atomic_open, atomic_write_text

COLUMNS = [  # (key, heading, format)
    ("tokens_per_word", "tokens / word", "{:.2f}"),
    ("chars_per_token", "chars / token", "{:.2f}"),
    ("bytes_per_token", "bytes / token", "{:.2f}"),
    ("words_3plus_pieces", "words in 3+ pieces", "{:.1%}"),
    ("fallback_rate", "byte fallback / unknown", "{:.2%}"),
    ("vocab_used", "vocabulary used", "{:.1%}"),
    ("round_trip_exact", "round trip exact", "{:.1%}"),
    ("tokens_crossing_morphemes", "tokens across a morpheme boundary", "{:.2%}"),
    ("pieces_crossing_morphemes", "pieces ever across one", "{:.2%}"),
]
LANGUAGE_NAMES = {"ko": "Korean (word = eojeol)", "de": "German", "other": "other"}


def markdown(results: dict[str, dict[str, dict]], sources: dict[str, str], inputs: list[str]) -> str:
    lines = ["# Tokenizer report", "", f"Input: {', '.join(inputs)}", ""]
    lines += [f"- **{name}**: `{source}`" for name, source in sources.items()]
    languages = [lang for lang in ("ko", "de", "other") if any(lang in r for r in results.values())]
    for language in languages:
        rows = {name: r[language] for name, r in results.items() if language in r}
        any_row = next(iter(rows.values()))
        columns = [c for c in COLUMNS if c[0] in any_row]
        lines += ["", f"## {LANGUAGE_NAMES[language]}: {any_row['documents']:,} documents, {any_row['words']:,} words",
                  "", "| tokenizer | vocabulary | " + " | ".join(c[1] for c in columns) + " |",
                  "|---|---:|" + "---:|" * len(columns)]
        for name, row in rows.items():
            cells = [fmt.format(row[key]) for key, _, fmt in columns]
            lines.append(f"| {name} | {row['vocab_size']:,} | " + " | ".join(cells) + " |")
    lines += ["", "tokens / word: tokens of the documents over their whitespace-delimited words. words in 3+ pieces: "
              "words overlapped by three or more tokens. byte fallback / unknown: tokens that are the unknown token, "
              "a byte piece, or part of one character's bytes. vocabulary used: distinct ordinary pieces seen over "
              "the vocabulary (special tokens left out). round trip exact: documents whose decode(encode(text)) "
              "is the text or its NFC form.", ""]
    return "\n".join(lines)


def chart(results: dict[str, dict[str, dict]], output: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = list(results)
    languages = [lang for lang in ("ko", "de", "other") if any(lang in r for r in results.values())]
    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.8 / max(len(names), 1)
    for panel, (key, title) in zip(axes, [("tokens_per_word", "tokens per word (Korean: per eojeol)"),
                                          ("vocab_used", "share of the vocabulary used")]):
        for index, name in enumerate(names):
            values = [results[name].get(lang, {}).get(key, np.nan) for lang in languages]
            bars = panel.bar(np.arange(len(languages)) + index * width, values, width, label=name)
            panel.bar_label(bars, fmt="%.2f", fontsize=7)
        panel.set_xticks(np.arange(len(languages)) + width * (len(names) - 1) / 2, languages)
        panel.set_title(title)
    axes[0].legend(fontsize=8)
    figure.tight_layout()
    with atomic_open(output, "wb") as handle:
        figure.savefig(handle, format="png", dpi=110)
    plt.close(figure)


def write_report(results: dict[str, dict[str, dict]], sources: dict[str, str], inputs: list[str], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "report.json", json.dumps({"inputs": inputs, "tokenizers": sources, "results": results},
                                                          indent=2, ensure_ascii=False) + "\n")
    atomic_write_text(folder / "report.md", markdown(results, sources, inputs))
    chart(results, folder / "chart.png")
