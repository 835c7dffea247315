"""Vocabulary size by measurement: train one tokenizer per size on the same sample, measure tokens per
word on held-out documents of that sample, and set each size against its embedding's share of a model.

The sample is read (and, with ``--morphemes ko``, analyzed) once into a temporary file beside the
output; every 20th document is held out and never trained on. Each size's tokenizer is kept
(``OUTPUT/<size>/``) so the chosen one is ready to use.

The rule (README, Tokenizers): take the smallest size whose tokens per word on the main language
(the one with the most held-out words) is within ``TOLERANCE`` of the largest size measured: past it,
a bigger vocabulary shortens sequences by less than that, while its embedding keeps growing.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

from pretrain.atomic import atomic_write_text
from pretrain.tokenization.morpheme_starts import unmark
from pretrain.tokenization.report import measure
from pretrain.tokenization.training import SampleStats, TokenizerTrainingOptions, prepared_texts, train_tokenizer

log = logging.getLogger(__name__)
HOLD_OUT_EVERY = 20
TOLERANCE = 0.03
ParamsFor = Callable[[int], tuple[int, int]]  # vocabulary size -> (all parameters, embedding parameters)


def _lines(path: Path) -> Iterator[str]:
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            yield json.loads(line)


def sweep(options: TokenizerTrainingOptions, sizes: list[int], params_for: ParamsFor | None = None,
          preset: str | None = None) -> dict:
    """Train and measure every size; write OUTPUT/sweep.json and sweep.md; return the results."""
    output = Path(options.output)
    output.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="sweep.tmp-", dir=output))
    try:
        train_file, held_file = scratch / "train.jsonl", scratch / "held.jsonl"
        stats = SampleStats()
        with open(train_file, "w", encoding="utf-8") as train, open(held_file, "w", encoding="utf-8") as held:
            for index, text in enumerate(prepared_texts(options, stats)):
                target = held if index % HOLD_OUT_EVERY == HOLD_OUT_EVERY - 1 else train
                target.write(json.dumps(unmark(text)[0] if target is held else text, ensure_ascii=False) + "\n")
        points = []
        for size in sorted(sizes):
            folder = output / str(size)
            tokenizer = train_tokenizer(replace(options, output=str(folder), vocab_size=size), _lines(train_file))
            measured = measure({str(size): tokenizer}, _lines(held_file))[str(size)]
            point = {"vocab_size": size, "actual_vocab_size": tokenizer.vocab_size, "folder": str(folder),
                     "tokens_per_word": {lang: m["tokens_per_word"] for lang, m in measured.items()},
                     "held_out_words": {lang: m["words"] for lang, m in measured.items()}}
            if params_for is not None:
                total, embedding = params_for(tokenizer.vocab_size)
                point.update(parameters=total, embedding_parameters=embedding, embedding_share=embedding / total)
            points.append(point)
            log.info("vocabulary %d: tokens per word %s", size, point["tokens_per_word"])
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    result = {"preset": preset, "sample_documents": stats.documents, "sample_mb": stats.text_bytes / 1e6,
              "skipped": dict(stats.skipped), "truncated_files": stats.truncated_files,  # --skip-bad-input's counts
              "morphemes": options.morphemes, "kind": options.kind, "points": points, **recommend(points)}
    atomic_write_text(output / "sweep.json", json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    atomic_write_text(output / "sweep.md", sweep_markdown(result))
    return result


def recommend(points: list[dict]) -> dict:
    """The README's rule, applied: the smallest size within TOLERANCE of the largest one's tokens per word."""
    words = points[-1]["held_out_words"]
    language = max(words, key=words.get)
    best = points[-1]["tokens_per_word"][language]
    chosen = next(p for p in points if p["tokens_per_word"].get(language, float("inf")) <= best * (1 + TOLERANCE))
    return {"main_language": language, "recommended": chosen["vocab_size"],
            "rule": f"smallest size whose {language} tokens per word is within {TOLERANCE:.0%} of the largest "
                    f"size's ({best:.3f})"}


def sweep_markdown(result: dict) -> str:
    languages = sorted({lang for p in result["points"] for lang in p["tokens_per_word"]})
    share = any("embedding_share" in p for p in result["points"])
    lines = [f"# Vocabulary sizes ({result['kind']}{', morphemes ' + result['morphemes'] if result['morphemes'] else ''})",
             "", f"Sample: {result['sample_documents']:,} documents, {result['sample_mb']:.1f} MB; every "
             f"{HOLD_OUT_EVERY}th document held out and measured."
             + "".join(f" Skipped as bad input: {n:,} ({reason})." for reason, n in result["skipped"].items())
             + "".join(f" Truncated (kept its complete records): {path}." for path in result["truncated_files"]), "",
             "| size | " + " | ".join(f"tokens / word ({lang})" for lang in languages)
             + (f" | embedding share of {result['preset']}" if share else "") + " |",
             "|---:|" + "---:|" * (len(languages) + share)]
    for p in result["points"]:
        cells = [f"{p['tokens_per_word'][lang]:.3f}" if lang in p["tokens_per_word"] else "" for lang in languages]
        if share:
            cells.append(f"{p['embedding_share']:.1%} ({p['embedding_parameters'] / 1e6:.1f}M of "
                         f"{p['parameters'] / 1e6:.1f}M)")
        lines.append(f"| {p['vocab_size']:,} | " + " | ".join(cells) + " |")
    lines += ["", f"**Recommended: {result['recommended']:,}** ({result['rule']}).", ""]
    return "\n".join(lines)
