"""Score a model on text: loss, perplexity and bits per byte, per input and in total.

    pretrain-eval runs/ko-gpt2 --input held_out.jsonl data/ko_valid_text_document --output eval.json
    pretrain-eval hf/ko-gpt2 --input 'test/*.txt' --text-mode paragraph
    pretrain-eval runs/ko-bert/checkpoints/step00010000 --input held_out.jsonl

MODEL is a run dir (its newest complete checkpoint), one of its checkpoints, or a Hugging Face model
folder. Inputs are text/jsonl (any format pretrain-preprocess reads) or .bin/.idx prefixes. A causal
LM scores each document on its own with lm-evaluation-harness's rolling windows (its
loglikelihood_rolling: the same bits per byte as lm-eval on the same model and documents); a masked
LM reports the masked-token loss under the trainer's deterministic masking (no bits per byte), on pieces
of the run's data.seq_len (kept in pretrain-export's folders; a folder made elsewhere: the model's
context)."""

from __future__ import annotations

import argparse
import json
import logging
import math
from collections.abc import Iterator

import numpy as np

from pretrain.cli.runner import UserError, run
from pretrain.tokenization.loading import NO_LENGTH_LIMIT

log = logging.getLogger(__name__)
DEFAULT_MAX_LENGTH = 2048  # lm-eval's, for a model whose config names no context length
DEFAULT_SEED = 1234  # masked LM: the masking seed, the same for a run dir and its export (and for any two runs)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="a run dir, one of its checkpoints/stepNNNNNNNN dirs, or a Hugging Face model folder")
    p.add_argument("--input", nargs="+", required=True, metavar="PATH",
                   help="text/jsonl files, globs or folders, or .bin/.idx dataset prefixes")
    p.add_argument("--output", help="write the figures as JSON here (atomically)")
    p.add_argument("--json-keys", nargs="+", default=["text"], help="jsonl/parquet fields that are documents")
    p.add_argument("--text-mode", choices=["line", "paragraph"], default="line",
                   help=".txt files: a document per line, or per block between blank lines")
    p.add_argument("--input-format", help="the input format when the file name does not tell (jsonl, text, ...)")
    p.add_argument("--json-path", help="nested JSON: where the documents are, e.g. 'document[].paragraph[].form'")
    p.add_argument("--limit", type=int, help="score only the first N documents of each input")
    p.add_argument("--max-length", type=int,
                   help="window length in tokens. Causal LM: default the model's context, as lm-eval takes it. "
                        "Masked LM: piece length, [CLS]/[SEP] included, at most the model's context; default the "
                        "run's data.seq_len (a run dir, or a folder pretrain-export wrote), else the model's context")
    p.add_argument("--batch-tokens", type=int, default=4096,
                   help="padded tokens per forward pass (memory: this x the vocabulary x 8 bytes of logits)")
    p.add_argument("--objective", choices=["clm", "mlm"], help="causal or masked LM (default: the architecture's)")
    p.add_argument("--mask-prob", type=float, help="masked LM: share of tokens to mask (default: the run's "
                                                   "data.mask_prob; a folder made elsewhere: its model family's, "
                                                   "0.3 for ModernBERT, else 0.15)")
    p.add_argument("--seed", type=int,
                   help=f"masked LM: masking seed (default {DEFAULT_SEED} for every model, whatever run.seed it "
                        "was trained with, so a run dir and its export, or two runs, get the same masks)")
    p.add_argument("--device", default="auto", help="auto (a GPU where there is one), cpu, cuda, cuda:1, ...")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                   help="weights' precision (auto: the folder's, as lm-eval loads it)")
    p.add_argument("--per-document", action="store_true", help="also list each document's nll in the JSON")
    p.add_argument("--work-dir", help="where a run dir's checkpoint is exported while scoring (default: the "
                                      "system's temporary folder; it needs the model's fp32 size)")
    return p


def main(argv: list[str] | None = None) -> int:
    from pretrain.atomic import atomic_write_text
    from pretrain.evaluation import inputs
    from pretrain.evaluation.models import EvalError, open_model
    from pretrain.export import ExportError

    args = parser().parse_args(argv)
    if args.batch_tokens < 1 or (args.limit is not None and args.limit < 0):
        raise UserError("--batch-tokens must be at least 1 and --limit at least 0")
    if args.max_length is not None and args.max_length < 1:
        raise UserError(f"--max-length={args.max_length} must be at least 1")
    if args.mask_prob is not None and not 0 < args.mask_prob < 1:
        raise UserError(f"--mask-prob={args.mask_prob} must be between 0 and 1")
    found = inputs.resolve(args.input)
    options = inputs.ReadOptions(tuple(args.json_keys), args.text_mode, args.input_format, args.json_path)
    try:
        with open_model(args.model, args.device, args.dtype, args.objective, args.work_dir) as model:
            report = evaluate(model, found, options, args)
    except (EvalError, ExportError) as exc:
        raise UserError(str(exc)) from None
    report = {"model": str(args.model), **report}
    for line in summary_lines(report):
        print(line)
    if args.output:
        atomic_write_text(args.output, json.dumps(report, indent=1, ensure_ascii=False) + "\n")
        print(f"wrote {args.output}")
    return 0


def evaluate(model, found: list, options, args) -> dict:
    """The report: settings, figures per input, and over all inputs."""
    from pretrain.evaluation.scoring import Totals

    config = model.model.config
    scorer, settings = (_causal if model.objective == "clm" else _masked)(model, args)
    report = {"architecture": model.architecture, "objective": model.objective, "checkpoint": model.checkpoint,
              **settings, "inputs": []}
    total = Totals(args.per_document)
    for item in found:
        log.info("scoring %s", item.spec)
        # ids the tokenizer knows: a model's padded rows past it stand for no token
        totals = scorer(_documents(model, item, options, args.limit, min(config.vocab_size, len(model.tokenizer))))
        total.add(totals)
        report["inputs"].append({"input": item.spec, "kind": item.kind, **totals.figures(model.objective)})
    report["total"] = total.figures(model.objective)
    return report


def _documents(model, item, options, limit: int | None, vocab_size: int) -> Iterator[tuple[list[int], int]]:
    """(token ids, UTF-8 bytes) per document: text encoded as lm-eval encodes it (for a masked LM: its ids
    without special tokens), a prefix's ids as stored (their bytes: those of the decoded text)."""
    from pretrain.evaluation import inputs

    if item.kind == "prefix":
        _check_end_of_document(item.prefix, model)
        special = set(model.tokenizer.all_special_ids)
        for ids in inputs.token_documents(item.prefix, model.end_of_document, vocab_size, limit):
            text_ids = ids[1:] if len(ids) and int(ids[0]) in special else ids  # a BOS stands for no text
            text = model.tokenizer.decode(text_ids.tolist(), clean_up_tokenization_spaces=False)
            yield ids.tolist(), len(text.encode("utf-8"))
        return
    encode = _encoder(model)
    for text in inputs.texts(item.spec, options, limit):
        yield encode(text), len(text.encode("utf-8"))


def _check_end_of_document(prefix: str, model) -> None:
    """Refuse data made by another tokenizer: the one recorded with the data (pretrain/data/provenance.py), and
    where none was recorded, one whose ids all fall within this one's whose documents all end with
    one token (that tokenizer's end of text) that is not this model's and never occurs inside them, and decoded
    with this tokenizer they do not encode back to their ids. (Documents that all end alike, one question each
    made without --append-eod, encode back: they are this tokenizer's.)"""
    from pretrain.data.gpt_dataset import foreign_end_token
    from pretrain.data.indexed import IndexedDataset
    from pretrain.data.provenance import mismatch
    from pretrain.evaluation.models import EvalError
    from pretrain.export import EXPORT_RECORD, recorded_end_of_document

    indexed = IndexedDataset(prefix)
    backend = getattr(model.tokenizer, "backend_tokenizer", None)  # a fast tokenizer's tokenizers.Tokenizer
    tokenizer = model.run_dir / "tokenizer" if model.run_dir else model.folder  # not a run's temporary export
    if backend is not None and (other := mismatch(indexed, backend, str(tokenizer), "the model's tokenizer")):
        raise EvalError(other)
    eod = model.end_of_document
    last = None if eod is None else foreign_end_token(indexed, eod)
    if last is None or encodes_back(indexed, model.tokenizer):
        return
    token = model.tokenizer.convert_ids_to_tokens
    older = (model.folder / EXPORT_RECORD).is_file() and recorded_end_of_document(model.folder) is None
    raise EvalError(f"{prefix}: every document ends with token id {last} (this model's {token(last)!r}), which never "
                    f"occurs inside them, not with its end-of-document token {token(eod)!r} (id {eod}), and its "
                    "documents decoded with the model's tokenizer do not encode back to their ids: the data was made "
                    "with --append-eod by another tokenizer. Preprocess it with the model's tokenizer, or score the "
                    "text files instead." + (
                        " (This folder was exported before pretrain-export recorded its run's end-of-document token: "
                        "if the data was made for that run, export the checkpoint again.)" if older else ""))


def encodes_back(indexed, tokenizer, probes: int = 16) -> bool:
    """Do most of (a sample of) the documents, special tokens left out, decode and encode back to their ids with
    ``tokenizer``? Text the tokenizer made does; another tokenizer's ids read as this one's do not."""
    from pretrain.data.gpt_dataset import probe_documents

    special = set(tokenizer.all_special_ids)
    same = tried = 0
    for document in probe_documents(indexed, range(indexed.num_documents), probes):
        ids = [int(i) for i in document if int(i) not in special]
        text = tokenizer.decode(ids, clean_up_tokenization_spaces=False)
        same, tried = same + (tokenizer.encode(text, add_special_tokens=False) == ids), tried + 1
    return 2 * same > tried


def _encoder(model):
    """lm-eval's HFLM.tok_encode for a causal LM: the tokenizer's own special tokens (a BOS where it adds
    one), none when the text already starts with the prefix token; plain text ids for a masked LM."""
    tokenizer = model.tokenizer
    if model.objective == "mlm":
        return lambda text: tokenizer.encode(text, add_special_tokens=False)
    prefix = _prefix_token(tokenizer)
    prefix_text = tokenizer.decode([prefix])

    def encode(text: str) -> list[int]:
        if prefix_text and text.startswith(prefix_text):
            return tokenizer.encode(text, add_special_tokens=False)
        return tokenizer.encode(text)

    return encode


def _prefix_token(tokenizer) -> int:
    """What the first token is predicted from: the BOS token, else the EOS token (lm-eval's choice)."""
    from pretrain.evaluation.models import EvalError

    token = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if token is None:
        raise EvalError("the model's tokenizer has neither a BOS nor an EOS token to predict a document's first "
                        "token from; set bos_token in its tokenizer_config.json.")
    return int(token)


def context_length(config, tokenizer) -> int:
    """The model's context as lm-eval resolves it: the config's n_positions / max_position_embeddings /
    n_ctx (a composite config's text_config first), else the tokenizer's model_max_length, else 2048."""
    config = getattr(config, "text_config", None) or config
    for name in ("n_positions", "max_position_embeddings", "n_ctx"):
        if getattr(config, name, None) is not None:
            return int(getattr(config, name))
    length = getattr(tokenizer, "model_max_length", None)
    return int(length) if length is not None and length != NO_LENGTH_LIMIT else DEFAULT_MAX_LENGTH


def _causal(model, args):
    from pretrain.evaluation.scoring import score_causal

    length = args.max_length or context_length(model.model.config, model.tokenizer)
    prefix = _prefix_token(model.tokenizer)
    settings = {"max_length": length, "prefix_token_id": prefix, "windows": "lm-eval loglikelihood_rolling"}
    return (lambda documents: score_causal(model.model, documents, prefix, length, args.batch_tokens,
                                           args.per_document)), settings


def _masked(model, args):
    from pretrain.data.masking import MaskingSpec
    from pretrain.evaluation.models import EvalError
    from pretrain.evaluation.scoring import MaskedSetup, score_masked
    from pretrain.export import recorded_training
    from pretrain.tokenization import load_tokenizer
    from pretrain.tokenization.specials import ROLES

    trained = recorded_training(model.folder)  # a run dir is scored through its export too
    mask_prob = args.mask_prob or (trained["mask_prob"] if trained else family_mask_prob(model.model.config))
    seed = DEFAULT_SEED if args.seed is None else args.seed
    whole_word = trained["whole_word_masking"] if trained else True
    unit = trained["whole_word_unit"] if trained else "eojeol"
    tokenizer = load_tokenizer(model.folder, ROLES)  # the project's view: special roles and word starts
    ids = tokenizer.specials.ids
    rows = model.model.config.vocab_size
    for role in ("cls", "sep", "mask"):
        if ids[role] >= rows or role in tokenizer.specials.added:
            why = "the folder names none" if role in tokenizer.specials.added else f"id {ids[role]} >= {rows} rows"
            raise EvalError(f"the tokenizer of {model.folder} has no {role} token the model knows ({why}): is it a "
                            "masked LM's tokenizer?")
    special = np.array(sorted(set(ids.values())))
    random_ids = np.setdiff1d(np.arange(min(tokenizer.vocab_size, rows)), special)
    masking = MaskingSpec(ids["mask"], mask_prob, whole_word, tokenizer.unit_starts(unit), random_ids)
    setup = MaskedSetup(ids["cls"], ids["sep"], ids["pad"], special, masking, seed)
    # the length it was trained on (the run's, [CLS]/[SEP] included); a folder does not record it: its context
    requested, source = ((args.max_length, "--max-length") if args.max_length else
                         (trained["seq_len"], "the run's data.seq_len") if trained else (math.inf, "the model's context"))
    context = context_length(model.model.config, model.tokenizer)
    length, source = (requested, source) if requested <= context else (context, "the model's context")
    if length < 3:
        raise EvalError(f"a masked LM needs windows of at least 3 tokens ([CLS] x [SEP]), not {length}")
    if not trained:
        log.info("%s does not say how it was trained: pieces of %d tokens (%s), %.0f%% masked; pass --max-length and "
                 "--mask-prob to score it as it trained", model.folder, length, source, 100 * mask_prob)
    settings = {"max_length": int(length), "max_length_from": source,
                "masking": {"mask_prob": mask_prob, "whole_word": whole_word, "unit": unit, "seed": seed}}
    return (lambda documents: score_masked(model.model, documents, setup, int(length), args.batch_tokens,
                                           args.per_document)), settings


def family_mask_prob(config) -> float:
    """The default mask share of the family that builds a transformers config's ``model_type`` (what
    data.mask_prob defaults to when training it: ModernBERT's 0.3), else BERT's 0.15."""
    from pretrain.model.families import family_for_model_type
    from pretrain.presets import FAMILIES, FamilyTraits

    family = family_for_model_type(getattr(config, "model_type", None) or "")
    return FAMILIES[family.name].mask_prob if family is not None else FamilyTraits.mask_prob  # the default: BERT's


def summary_lines(report: dict) -> list[str]:
    clm = report["objective"] == "clm"
    head = (f"{report['model']}: {report['architecture']}, "
            + (f"causal LM, rolling windows of {report['max_length']} tokens" if clm else
               f"masked LM, {report['masking']['mask_prob']:.0%} masked (seed {report['masking']['seed']}), "
               f"pieces of {report['max_length']} tokens ({report['max_length_from']})"))
    lines = [head, f"{'input':<40} {'documents':>10} {'tokens' if clm else 'masked':>12} {'bytes':>14} {'loss':>8} "
                   f"{'ppl':>10} {'bits/byte':>10}"]
    for name, figures in [(item["input"], item) for item in report["inputs"]] + [("total", report["total"])]:
        loss, ppl, bpb = (_number(figures[key], digits) for key, digits in (("loss", 4), ("perplexity", 2),
                                                                             ("bits_per_byte", 4)))
        shown = name if len(name) <= 40 else "…" + name[-39:]  # the end of a long path: its file name
        lines.append(f"{shown:<40} {figures['documents']:>10,} {figures['tokens' if clm else 'masked_tokens']:>12,} "
                     f"{figures['bytes']:>14,} {loss:>8} {ppl:>10} {bpb:>10}")
    return lines


def _number(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def cli() -> None:
    run(main)


if __name__ == "__main__":
    cli()
