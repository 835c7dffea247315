"""Train a tokenizer on a byte-capped sample of a corpus.

Kinds: ``bpe`` (byte-level, GPT-2 layout), ``wordpiece`` (BERT layout), ``spm-unigram`` and ``spm-bpe``
(the sentencepiece library). A 50k vocabulary needs tens of MB of text, not the whole corpus: the
sample takes at most ``max_bytes`` of text, spread over the input files in proportion to their
size (reading each file from its start), so a 40 GB corpus is never read whole and every file
(every language) is represented. Text is NFC-normalized by default: Korean often arrives
decomposed (NFD), which would otherwise learn jamo instead of syllables.

With ``morphemes="ko"`` a morphological analyzer marks the morpheme boundaries inside Korean eojeols
(``morphemes.py``, in a pool of worker processes) and every trainer is told never to join pieces
across a mark: BPE and WordPiece through a training-time pre-tokenizer split, SentencePiece through
its ``pretokenization_delimiter``. The saved tokenizer is the ordinary one, without the split: it
encodes plain text with no analyzer. ``morphemes.json`` beside it records the analyzer and which
pieces begin a morpheme (for ``data.whole_word_unit: morpheme``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pretrain.atomic import atomic_write_text
from pretrain.corpus import sources
from pretrain.corpus.json_path import parse_path
from pretrain.corpus.normalization import NORMALIZATIONS
from pretrain.corpus.parsing import parse_chunk
from pretrain.corpus.types import InputError, InputFile
from pretrain.tokenization.loading import MORPHEMES_FILE, LoadedTokenizer, from_backend, sentencepiece_to_tokenizers
from pretrain.tokenization.morpheme_starts import HeldBack, morpheme_starts
from pretrain.tokenization.morphemes import DEFAULT_ANALYZER, MARKER, mark_documents
from pretrain.tokenization.specials import ROLES

log = logging.getLogger(__name__)
KINDS = ("bpe", "wordpiece", "spm-unigram", "spm-bpe")
DEFAULT_VOCAB_SIZE = {"bpe": 50257, "wordpiece": 32000, "spm-unigram": 32000, "spm-bpe": 32000}
DEFAULT_SPECIALS = {
    "bpe": ["<|endoftext|>", "<pad>", "<s>", "</s>", "<mask>"],
    "wordpiece": ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
}


@dataclass
class TokenizerTrainingOptions:
    kind: str
    inputs: list[str]
    output: str
    vocab_size: int | None = None
    min_frequency: int = 2
    special_tokens: list[str] | None = None
    max_bytes: int = 64 << 20
    normalization: str = "nfc"
    lowercase: bool = False
    json_keys: list[str] = field(default_factory=lambda: ["text"])
    text_mode: str = "line"
    input_format: str | None = None
    json_path: str | None = None
    skip_bad_input: bool = False
    overwrite: bool = False
    morphemes: str | None = None  # "ko": no piece spans two morphemes of a Korean eojeol
    analyzer: str = DEFAULT_ANALYZER
    workers: int | None = None  # analyzer processes; default: every core


@dataclass
class SampleStats:
    documents: int = 0
    text_bytes: int = 0
    skipped: Counter = field(default_factory=Counter)
    truncated_files: list[str] = field(default_factory=list)


def sample_texts(options: TokenizerTrainingOptions, stats: SampleStats) -> Iterator[str]:
    """Documents from every input, at most ``max_bytes`` of text in all, proportional to file size."""
    files = sources.resolve_inputs(options.inputs, options.input_format)
    total = sum(f.size for f in files) or 1
    for file in files:
        budget = max(1, options.max_bytes * file.size // total)
        yield from _sample_file(file, budget, options, stats)


def _sample_file(file: InputFile, budget: int, options: TokenizerTrainingOptions,
                 stats: SampleStats) -> Iterator[str]:
    taken = 0
    path = parse_path(options.json_path) if options.json_path else None
    for chunk in sources.plan_chunks([(file, 0, file.size)], options.text_mode, min(1 << 20, budget), options.json_keys,
                                     path, options.skip_bad_input, stats.truncated_files):
        parsed = parse_chunk(chunk, options.json_keys, path)
        for problem in parsed.problems:
            if not options.skip_bad_input:
                raise InputError(str(problem))
            stats.skipped[problem.reason] += 1
        for index in range(len(parsed.lines)):
            for key in options.json_keys:
                text = parsed.texts[key][index]
                size = len(text.encode("utf-8", "replace"))
                stats.documents += 1
                stats.text_bytes += size
                taken += size
                yield text
            if taken >= budget:
                return


def prepared_texts(options: TokenizerTrainingOptions, stats: SampleStats) -> Iterator[str]:
    """The sample, with morpheme boundaries marked (and normalized) when ``options.morphemes``."""
    texts = sample_texts(options, stats)
    if options.morphemes:
        texts = mark_documents(texts, options.analyzer, options.normalization, options.workers)
    return texts


def _counted(texts: Iterable[str], stats: SampleStats) -> Iterator[str]:
    for text in texts:
        stats.documents += 1
        stats.text_bytes += len(text.encode("utf-8", "replace"))
        yield text


def _check_output(output: Path, options: TokenizerTrainingOptions) -> None:
    """--output is new, empty, or (with --overwrite) a tokenizer folder, which is replaced once the new one is
    complete; never a folder holding the inputs or other files, which --overwrite would delete."""
    inside = [f.path for f in sources.resolve_inputs(options.inputs, options.input_format)
              if Path(f.path).resolve().is_relative_to(output.resolve())]
    if inside:
        raise InputError(f"--output {output} holds the input {inside[0]}: write the tokenizer to a folder of its own.")
    if not output.is_dir() or not any(output.iterdir()):
        return
    if not (output / "tokenizer.json").exists():
        held = sorted(p.name for p in output.iterdir())
        raise InputError(f"--output {output} holds files that are not a tokenizer ({', '.join(held[:3])}"
                         f"{', ...' if len(held) > 3 else ''}): choose an empty or new folder.")
    if not options.overwrite:
        raise InputError(f"{output} holds a tokenizer: pass --overwrite to replace it (it is kept until the new one "
                         "is complete), or choose another --output.")


def train_tokenizer(options: TokenizerTrainingOptions, texts: Iterable[str] | None = None) -> LoadedTokenizer:
    """Train, write ``options.output`` atomically (a temporary folder renamed at the end), return it.

    ``texts``: already prepared text (as ``prepared_texts`` gives it) instead of sampling the inputs;
    the vocabulary-size sweep trains every size on one prepared sample."""
    if options.kind not in KINDS:
        raise ValueError(f"unknown tokenizer kind {options.kind!r}; choose one of {', '.join(KINDS)}")
    if options.normalization not in NORMALIZATIONS:
        raise ValueError(f"unknown normalization {options.normalization!r}; choose one of {', '.join(NORMALIZATIONS)}")
    output = Path(options.output)
    _check_output(output, options)
    if options.morphemes not in (None, "ko"):
        raise InputError(f"--morphemes {options.morphemes}: only Korean (ko) morphemes are supported.")
    vocab_size = options.vocab_size or DEFAULT_VOCAB_SIZE[options.kind]
    stats = SampleStats()
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{output.name}.tmp-", dir=output.parent))
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)  # the folder it becomes: a usual folder's mode, not mkdtemp's owner-only 0700
    try:
        stream = prepared_texts(options, stats) if texts is None else _counted(texts, stats)
        held = None
        if options.morphemes:
            held = HeldBack()
            stream = held.watch(stream)
        if options.kind.startswith("spm-"):
            tokenizer = _train_sentencepiece(options, stream, vocab_size, staging)
        else:
            tokenizer = _train_hf(options, stream, vocab_size)
        if stats.documents == 0:
            raise InputError(f"no text found in {options.inputs} (check --json-keys / --input-format).")
        tokenizer.save(staging)
        if held is not None:
            starts = morpheme_starts(tokenizer, held.texts)
            atomic_write_text(staging / MORPHEMES_FILE, json.dumps({
                "language": options.morphemes, "analyzer": options.analyzer, "marked_documents": held.documents,
                "boundaries": held.boundaries, "morpheme_start_ids": starts}) + "\n")
        if output.exists():
            shutil.rmtree(output)
        os.replace(staging, output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if tokenizer.sentencepiece_model:
        tokenizer.sentencepiece_model = str(output / Path(tokenizer.sentencepiece_model).name)
    tokenizer.source = str(output)
    log.info("trained %s tokenizer: %d tokens from %d documents (%.1f MB sampled)%s%s -> %s", options.kind,
             tokenizer.vocab_size, stats.documents, stats.text_bytes / 1e6,
             "".join(f"; skipped {n} ({r})" for r, n in stats.skipped.items())
             + "".join(f"; truncated (kept its complete records): {path}" for path in stats.truncated_files),
             f"; {held.boundaries:,} morpheme boundaries ({options.analyzer})" if held else "", output)
    return tokenizer


def _normalizer(name: str):
    from tokenizers import normalizers

    return {"nfc": normalizers.NFC(), "nfkc": normalizers.NFKC(), "none": None}[name]


def _train_hf(options: TokenizerTrainingOptions, texts: Iterator[str], vocab_size: int) -> LoadedTokenizer:
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    specials = options.special_tokens or DEFAULT_SPECIALS[options.kind]
    unicode_form = _normalizer(options.normalization)
    if options.kind == "bpe":
        backend = Tokenizer(models.BPE(continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False))
        backend.normalizer = unicode_form
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        if options.morphemes:  # training only: a morpheme boundary ends a word, the mark is dropped
            backend.pre_tokenizer = pre_tokenizers.Sequence([
                pre_tokenizers.Split(MARKER, behavior="removed"), pre_tokenizers.ByteLevel(add_prefix_space=False)])
        backend.decoder = decoders.ByteLevel()
        backend.post_processor = processors.ByteLevel(trim_offsets=False)
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=options.min_frequency,
                                      special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                      show_progress=False)
    else:
        unk = next((t for t in specials if "UNK" in t.upper()), "[UNK]")
        backend = Tokenizer(models.WordPiece(unk_token=unk, max_input_chars_per_word=100))
        bert = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                          strip_accents=None if options.lowercase else False, lowercase=options.lowercase)
        backend.normalizer = normalizers.Sequence([unicode_form, bert]) if unicode_form else bert
        backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        if options.morphemes:  # training only: a morpheme after a boundary starts with the mark, renamed ## below
            backend.pre_tokenizer = pre_tokenizers.Sequence([
                pre_tokenizers.Split(MARKER, behavior="merged_with_next"), pre_tokenizers.BertPreTokenizer()])
        backend.decoder = decoders.WordPiece(prefix="##")
        # with morphemes, each continuation morpheme's piece also exists as a ##-piece: room for the duplicates
        trainer = trainers.WordPieceTrainer(vocab_size=vocab_size + (vocab_size // 8 if options.morphemes else 0),
                                            min_frequency=options.min_frequency, special_tokens=specials,
                                            continuing_subword_prefix="##", show_progress=False)
    backend.train_from_iterator(texts, trainer)
    if options.morphemes and options.kind == "bpe":
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    if options.morphemes and options.kind == "wordpiece":
        backend.model = models.WordPiece(_continuations(backend, vocab_size), unk_token=unk, max_input_chars_per_word=100)
        backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    if options.kind == "wordpiece":
        cls, sep = "[CLS]", "[SEP]"
        if backend.token_to_id(cls) is not None and backend.token_to_id(sep) is not None:
            backend.post_processor = processors.TemplateProcessing(
                single=f"{cls} $A {sep}", pair=f"{cls} $A {sep} $B:1 {sep}:1",
                special_tokens=[(cls, backend.token_to_id(cls)), (sep, backend.token_to_id(sep))])
    return from_backend(backend, options.output, {}, options.lowercase, None, ROLES)  # ours have every role


def _continuations(backend, vocab_size: int) -> dict[str, int]:
    """The WordPiece vocabulary with every piece learned after a morpheme mark ("ꙮ에") made the
    continuation piece it is at encode time ("##에"), duplicates dropped, the bare mark dropped, cut to
    ``vocab_size`` in the order the trainer created them (later pieces are the rarer merges)."""
    ordered = sorted(backend.get_vocab(with_added_tokens=False).items(), key=lambda item: item[1])
    vocab: dict[str, int] = {}
    for token, _ in ordered:
        if token.startswith(MARKER):
            token = "##" + token[len(MARKER):]
        if token != "##" and MARKER not in token and token not in vocab:
            vocab[token] = len(vocab)
        if len(vocab) == vocab_size:
            break
    return vocab


def _train_sentencepiece(options: TokenizerTrainingOptions, texts: Iterator[str], vocab_size: int,
                         staging: Path) -> LoadedTokenizer:
    sample = staging / "sample.txt"
    with open(sample, "w", encoding="utf-8") as handle:
        for text in texts:
            if options.normalization == "nfc":
                text = unicodedata.normalize("NFC", text)
            for line in text.splitlines():
                if line.strip():
                    handle.write(line + "\n")
    if sample.stat().st_size == 0:
        return _empty_guard(options)
    user_specials: Sequence[str] = [t for t in (options.special_tokens or ["<mask>"])
                                    if t not in ("<unk>", "<s>", "</s>", "<pad>")]
    try:
        _spm_train(options, sample, staging, vocab_size, user_specials)
    except RuntimeError as exc:  # sentencepiece says what the text supports; say it without a traceback
        if "Vocabulary size" not in str(exc):
            raise
        said = str(exc).split("] ")[-1]
        raise InputError(f"{options.inputs}: {said} Change --vocab-size as it says or give more text.") from exc
    sample.unlink()
    model_file = staging / "spm.model"
    backend = sentencepiece_to_tokenizers(model_file, nfc=options.normalization == "nfc")
    return from_backend(backend, options.output, {}, False, str(model_file), ROLES)


def _spm_train(options: TokenizerTrainingOptions, sample: Path, staging: Path, vocab_size: int,
               user_specials: Sequence[str]) -> None:
    import sentencepiece as spm

    spm.SentencePieceTrainer.train(
        input=str(sample), model_prefix=str(staging / "spm"), vocab_size=vocab_size,
        model_type=options.kind.removeprefix("spm-"), character_coverage=0.9995, byte_fallback=True,
        normalization_rule_name="nfkc" if options.normalization == "nfkc" else "identity",
        remove_extra_whitespaces=False, split_digits=False, max_sentence_length=1 << 16,
        pretokenization_delimiter=MARKER if options.morphemes else "",
        unk_id=0, bos_id=1, eos_id=2, pad_id=3, control_symbols=list(user_specials),
        num_threads=os.cpu_count() or 1, minloglevel=2, train_extremely_large_corpus=False,
    )


def _empty_guard(options: TokenizerTrainingOptions):
    raise InputError(f"no text found in {options.inputs} (check --json-keys / --input-format).")
