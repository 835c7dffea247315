"""Load a tokenizer from a local folder in any common layout, or by hub name, as one object.

Layouts, tried in this order:
  * ``tokenizer.json`` (a Hugging Face fast tokenizer; what ``tools/train_tokenizer.py`` writes),
  * ``vocab.json`` + ``merges.txt`` (GPT-2 byte-level BPE, e.g. ``dbmdz/german-gpt2``),
  * ``vocab.txt`` (BERT WordPiece),
  * ``*.model`` (SentencePiece, unigram or BPE), converted so it encodes like SentencePiece.
Anything else that is not a folder is taken for a hub name and goes through ``transformers``
(needs network access, or the model already in the local Hugging Face cache).

Only the ``tokenizers`` library is used for local folders, so preprocessing workers stay small.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pretrain.atomic import atomic_write_text
from pretrain.tokenization.specials import (
    HF_CONFIG_KEYS,
    HF_NAMES,
    ROLES,
    SpecialTokens,
    TokenizerError,
    config_token,
    resolve_specials,
)

log = logging.getLogger(__name__)
_WHITESPACE_BYTES = ("Ġ", "Ċ", "ĉ", "č")  # byte-level BPE's images of " ", "\n", "\t", "\r"
NO_LENGTH_LIMIT = 1_000_000_000_000_000_019_884_624_838_656  # transformers' "no limit" model_max_length
CHAT_TEMPLATE_FILES = ("chat_template.jinja", "chat_template.json")
CARRIED_KEYS = ("chat_template", "padding_side")  # a release's tokenizer_config.json settings that its users rely on
MORPHEMES_FILE = "morphemes.json"  # written by --morphemes training: the analyzer and the morpheme-start ids
WHOLE_WORD_UNITS = ("eojeol", "morpheme")


@dataclass
class LoadedTokenizer:
    """A ``tokenizers.Tokenizer`` plus the facts the pipeline needs about it."""

    backend: object  # tokenizers.Tokenizer
    family: str  # "byte_bpe", "wordpiece" or "sentencepiece"
    source: str
    specials: SpecialTokens
    lowercase: bool = False
    sentencepiece_model: str | None = None  # the .model file, copied along when saving
    encoder_roles: tuple[str, str] | None = None  # set by for_encoder: the roles saved as bos and eos
    carried: dict = field(default_factory=dict)  # the source's CARRIED_KEYS settings, written again by save

    @property
    def vocab_size(self) -> int:
        """Number of ids, added tokens included (the model's embedding needs at least this many): one past the
        highest id, which is more than the tokens where the vocabulary has a hole (a vocab.txt line repeated)."""
        size = self.backend.get_vocab_size(with_added_tokens=True)
        while self.backend.id_to_token(size) is not None:
            size += 1
        return size

    def encode(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.backend.encode_batch(texts, add_special_tokens=False)]

    @property
    def model_ids(self) -> dict[str, int]:
        """The ids a model's config and generation config name: each role's, and "bos" where the tokenizer
        has a BOS (``bos_id``)."""
        bos = self.bos_id
        return {**self.specials.ids, **({"bos": bos} if bos is not None else {})}

    @property
    def bos_id(self) -> int | None:
        """The one token this tokenizer's own post-processor puts before a text, with nothing after it: the BOS
        of a Llama's, Mistral's or Gemma's tokenizer, which their models were trained to see first. None for
        GPT-2's byte-level BPE and this project's tokenizers (a WordPiece's [CLS] ... [SEP] is not a BOS)."""
        plain = self.backend.encode("a", add_special_tokens=False).ids
        full = self.backend.encode("a").ids
        return full[0] if len(full) == len(plain) + 1 and full[1:] == plain else None

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        return self.backend.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def to_json(self) -> str:
        return self.backend.to_str()

    def word_starts(self) -> np.ndarray:
        """Per id: does this token begin a new word (whitespace-delimited; a Korean eojeol is one)?

        Byte-level BPE marks a word start with a leading space byte, WordPiece marks continuations
        with ``##``, SentencePiece marks starts with ``▁``. Special tokens count as word starts.
        """
        starts = np.zeros(self.vocab_size, dtype=bool)
        for token, index in self.backend.get_vocab(with_added_tokens=True).items():
            if self.family == "byte_bpe":
                starts[index] = token.startswith(_WHITESPACE_BYTES)
            elif self.family == "wordpiece":
                starts[index] = not token.startswith("##")
            else:
                starts[index] = token.startswith("▁")
        starts[list(self.specials.ids.values())] = True
        return starts

    def unit_starts(self, unit: str = "eojeol") -> np.ndarray:
        """Per id: does this token begin a whole-word-masking unit? "eojeol": a whitespace-delimited
        word (``word_starts``); "morpheme": also a morpheme inside one, as recorded in the folder's
        morphemes.json by ``--morphemes ko`` training."""
        if unit not in WHOLE_WORD_UNITS:
            raise TokenizerError(f"unknown whole-word unit {unit!r}; choose one of {', '.join(WHOLE_WORD_UNITS)}")
        starts = self.word_starts()
        if unit == "morpheme":
            file = Path(self.source) / MORPHEMES_FILE
            if not file.exists():
                raise TokenizerError(
                    f"data.whole_word_unit=morpheme needs a tokenizer trained with --morphemes ko, but {self.source} "
                    f"has no {MORPHEMES_FILE}; retrain it with --morphemes ko or set data.whole_word_unit=eojeol.")
            ids = json.loads(file.read_text(encoding="utf-8"))["morpheme_start_ids"]
            starts[np.asarray(ids, dtype=np.int64)] = True
        return starts

    def for_encoder(self, before: str, after: str) -> None:
        """Make the saved tokenizer a masked LM's, as the model saw its inputs: a text with special tokens is
        ``before`` text ``after`` (a pair ``before`` A ``after`` B ``after``, B's type id 1), whatever the
        vocabulary (a byte-level BPE adds nothing by itself); those roles' tokens are its bos and eos (not a
        causal LM's end-of-text); and a mask token in text stands where a whole word was masked in training
        (WordPiece drops spaces anyway): a byte-level BPE's takes the space before it, as RoBERTa's and
        ModernBERT's do (the word was ``Ġword``); a SentencePiece's the spaces on both sides, as the word was
        ``▁word`` and the next one's ``▁`` comes back with the text after. Ids of text without special tokens are
        unchanged."""
        from tokenizers import AddedToken, processors

        first, last = self.specials.tokens[before], self.specials.tokens[after]
        template = processors.TemplateProcessing(
            single=f"{first} $A {last}", pair=f"{first} $A {last} $B:1 {last}:1",
            special_tokens=[(first, self.specials.ids[before]), (last, self.specials.ids[after])])
        if self.family == "byte_bpe":  # keep the byte-level offsets step
            template = processors.Sequence([processors.ByteLevel(trim_offsets=False), template])
        if self.family != "wordpiece":
            self.backend.add_special_tokens([AddedToken(self.specials.tokens["mask"], special=True, normalized=False,
                                                        lstrip=True, rstrip=self.family == "sentencepiece")])
        self.backend.post_processor = template
        self.encoder_roles = (before, after)

    def save(self, folder: str | os.PathLike, model_max_length: int | None = None,
             model_input_names: list[str] | None = None) -> None:
        """Write a folder that this loader and ``transformers.AutoTokenizer`` both load. An export names the
        model's longest input (``truncation=True`` cuts there) and, for a model without token types, the
        inputs it takes."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(folder / "tokenizer.json", self.backend.to_str(pretty=True))
        model = self.backend.model
        if self.family in ("byte_bpe", "wordpiece"):
            model.save(str(folder))  # vocab.json + merges.txt, or vocab.txt
        for name in (MORPHEMES_FILE, *CHAT_TEMPLATE_FILES):  # a release's chat template goes along as it is
            source = Path(self.source) / name
            if source.exists() and not (folder / name).exists():
                shutil.copyfile(source, folder / name)
        if self.sentencepiece_model:
            target = folder / Path(self.sentencepiece_model).name
            if not target.exists() or not target.samefile(self.sentencepiece_model):
                shutil.copyfile(self.sentencepiece_model, target)
        tokens = {HF_CONFIG_KEYS[role]: self.specials.tokens[role] for role in ROLES if role in self.specials.tokens}
        bos = self.bos_id
        tokens["bos_token"] = (self.backend.id_to_token(bos) if bos is not None
                               else self.specials.tokens.get("cls" if self.family != "byte_bpe" else "eod",
                                                             self.specials.tokens["eod"]))
        if self.encoder_roles:
            tokens["bos_token"], tokens["eos_token"] = (self.specials.tokens[role] for role in self.encoder_roles)
        config = {
            "tokenizer_class": {"byte_bpe": "GPT2Tokenizer", "wordpiece": "BertTokenizer"}.get(
                self.family, "PreTrainedTokenizerFast"),
            **tokens,
            "model_max_length": model_max_length or NO_LENGTH_LIMIT,
            "clean_up_tokenization_spaces": False,
            "add_prefix_space": False,
            "do_lower_case": self.lowercase,
            **({"model_input_names": model_input_names} if model_input_names else {}),
            **self.carried,
        }
        atomic_write_text(folder / "tokenizer_config.json", json.dumps(config, indent=2, ensure_ascii=False) + "\n")
        atomic_write_text(folder / "special_tokens_map.json", json.dumps(tokens, indent=2, ensure_ascii=False) + "\n")


def load_tokenizer(path_or_name: str | os.PathLike, roles: tuple[str, ...] = ("eod",),
                   quiet: bool = False) -> LoadedTokenizer:
    """Load a tokenizer folder (or file inside one) or a hub name, adding the special ``roles`` it lacks (an
    end-of-document token always; see pretrain/tokenization/specials.py) and saying so unless ``quiet``."""
    from tokenizers import Tokenizer

    path = Path(path_or_name).expanduser()
    if path.is_file():
        path = path.parent
    if not path.exists():
        return _from_hub(os.path.expanduser(str(path_or_name)), roles, quiet)
    if not path.is_dir():
        raise TokenizerError(f"{path_or_name} is neither a tokenizer folder nor a file inside one.")
    config = _read_config(path)
    lowercase = bool(config.get("do_lower_case", False))
    spm_model = next(iter(sorted(path.glob("*.model"))), None)
    if (path / "tokenizer.json").exists():
        try:
            backend = Tokenizer.from_file(str(path / "tokenizer.json"))
        except Exception as exc:  # noqa: BLE001 - the tokenizers library raises plain Exception
            raise TokenizerError(f"{path / 'tokenizer.json'} cannot be read ({exc}); is it damaged?") from exc
    elif (path / "vocab.json").exists() and (path / "merges.txt").exists():
        backend = _gpt2_bpe(path)
    elif (path / "vocab.txt").exists():
        backend = _bert_wordpiece(path, lowercase)
        if "do_lower_case" not in config:
            log.info("%s has no tokenizer_config.json: WordPiece is loaded cased (do_lower_case=false)", path)
    elif spm_model is not None:
        backend = sentencepiece_to_tokenizers(spm_model)
        _add_bos_as_configured(backend, config)
    else:
        present = ", ".join(sorted(p.name for p in path.iterdir())[:10]) or "nothing"
        raise TokenizerError(
            f"{path} is not a tokenizer folder: it needs tokenizer.json, vocab.json + merges.txt (GPT-2 BPE), "
            f"vocab.txt (WordPiece) or a SentencePiece *.model, but holds {present}. Train one with "
            "tools/train_tokenizer.py or point --tokenizer at a downloaded model folder."
        )
    declared = {role: config_token(config.get(name)) for role in ROLES for name in HF_NAMES[role] if name in config}
    loaded = from_backend(backend, str(path), {k: v for k, v in declared.items() if v}, lowercase,
                          str(spm_model) if spm_model else None, roles, quiet)
    loaded.carried = {key: config[key] for key in CARRIED_KEYS if key in config}
    return loaded


def warn_if_another_vocabulary(tokenizer: LoadedTokenizer, folder: str) -> None:
    """Continued pretraining reads a release's embedding rows as its own tokenizer's tokens: warn where
    ``tokenizer`` (data.tokenizer) gives another token to ids both have. An extended vocabulary (new tokens
    after the release's) agrees on every shared id; a replaced one relearns them all."""
    from tokenizers import Tokenizer

    file = Path(folder) / "tokenizer.json"
    if not file.is_file() or Path(tokenizer.source).resolve() == Path(folder).resolve():
        return
    try:
        theirs = {index: token for token, index in Tokenizer.from_file(str(file)).get_vocab(True).items()}
    except Exception:  # noqa: BLE001 - not ours to judge: the folder's tokenizer is only compared
        return
    ours = {index: token for token, index in tokenizer.backend.get_vocab(True).items()}
    differ = sorted(index for index in ours.keys() & theirs.keys() if ours[index] != theirs[index])
    if differ:
        first = differ[0]
        log.warning("data.tokenizer=%s gives other tokens than model.init_from=%s's own tokenizer to %d of the %d ids "
                    "both have (id %d: %r, not %r): the release's embedding rows will stand for other tokens. Use the "
                    "release's tokenizer (or one that extends it) unless relearning its vocabulary is the plan",
                    tokenizer.source, folder, len(differ), len(ours.keys() & theirs.keys()), first, ours[first],
                    theirs[first])


def run_roles(family_roles: tuple[str, ...], run_dir: str | os.PathLike | None) -> tuple[str, ...]:
    """The roles a training run loads data.tokenizer with: its model family's, and on a resumed launch (``run_dir``
    given) every role the run saved in RUN_DIR/tokenizer, so that every launch of a run gives the same ids (a run
    begun when every load added all six roles keeps them)."""
    saved = _read_config(Path(run_dir) / "tokenizer") if run_dir is not None else {}
    return tuple(role for role in ROLES if role in family_roles or config_token(saved.get(HF_CONFIG_KEYS[role])))


def from_backend(backend, source: str, declared: dict[str, str], lowercase: bool, spm_model: str | None,
                 roles: tuple[str, ...] = ("eod",), quiet: bool = False) -> LoadedTokenizer:
    """Wrap a ``tokenizers.Tokenizer``: detect its family, find its special roles and add those of ``roles`` it
    lacks."""
    family = tokenizer_family(backend)
    specials = resolve_specials(backend, family, declared, roles)
    if specials.added and not quiet:
        log.warning("tokenizer %s lacked special tokens a model needs; added %s", source, specials.describe_added())
    return LoadedTokenizer(backend, family, source, specials, lowercase, spm_model)


def tokenizer_family(backend) -> str:
    """byte_bpe (GPT-2 style), wordpiece (BERT style) or sentencepiece (▁-marked words)."""
    description = json.loads(backend.to_str())
    model_type = description["model"]["type"]
    if model_type == "WordPiece":
        return "wordpiece"
    if model_type == "BPE" and "ByteLevel" in json.dumps(description.get("pre_tokenizer")):
        return "byte_bpe"
    return "sentencepiece"


def _add_bos_as_configured(backend, config: dict) -> None:
    """A folder with only a SentencePiece ``*.model`` (Llama 2's original tokenizer) says in its
    tokenizer_config.json whether texts start with a BOS (``add_bos_token``, as Llama 2's releases set it) and
    end with an EOS (``add_eos_token``): make the converted tokenizer do the same, as transformers' tokenizer
    for that folder does (which adds neither when the file says nothing)."""
    from tokenizers import processors

    add = {"bos": bool(config.get("add_bos_token")), "eos": bool(config.get("add_eos_token"))}
    tokens = {role: config_token(config.get(f"{role}_token")) or default
              for role, default in (("bos", "<s>"), ("eos", "</s>"))}
    ids = {role: backend.token_to_id(token) for role, token in tokens.items()}
    wanted = [role for role in ("bos", "eos") if add[role] and ids[role] is not None]
    if not wanted:
        return
    before = f"{tokens['bos']} " if "bos" in wanted else ""
    after = f" {tokens['eos']}" if "eos" in wanted else ""
    backend.post_processor = processors.TemplateProcessing(
        single=f"{before}$A{after}", pair=f"{before}$A{after} {before}$B:1{after}",
        special_tokens=[(tokens[role], ids[role]) for role in wanted])


def _read_config(path: Path) -> dict:
    config: dict = {}
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        file = path / name
        if file.exists():
            try:
                config.update(json.loads(file.read_text(encoding="utf-8")))
            except json.JSONDecodeError as exc:
                raise TokenizerError(f"{file} is not valid JSON ({exc}); fix or delete it.") from exc
    return config


def _gpt2_bpe(path: Path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    try:
        model = models.BPE.from_file(str(path / "vocab.json"), str(path / "merges.txt"),
                                     continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False)
    except Exception as exc:  # noqa: BLE001
        raise TokenizerError(f"{path}: vocab.json / merges.txt cannot be read as GPT-2 BPE ({exc}).") from exc
    backend = Tokenizer(model)
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    return backend


def _bert_wordpiece(path: Path, lowercase: bool):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers

    vocab = models.WordPiece.read_file(str(path / "vocab.txt"))
    unk = "[UNK]" if "[UNK]" in vocab else "<unk>"
    backend = Tokenizer(models.WordPiece(vocab, unk_token=unk, max_input_chars_per_word=100))
    backend.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                                    strip_accents=None if lowercase else False, lowercase=lowercase)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece(prefix="##")
    return backend


def sentencepiece_to_tokenizers(model_file: str | os.PathLike, nfc: bool = False):
    """A ``tokenizers.Tokenizer`` that encodes like ``sentencepiece`` with this model."""
    from sentencepiece import sentencepiece_model_pb2
    from tokenizers import normalizers
    from transformers.convert_slow_tokenizer import SpmConverter

    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(Path(model_file).read_bytes())
    if proto.trainer_spec.model_type == 2:  # BPE
        vocab: object = {piece.piece: i for i, piece in enumerate(proto.pieces)}
    else:
        vocab = [(piece.piece, piece.score) for piece in proto.pieces]
    backend = SpmConverter.build_tokenizer_from_spm_proto(proto, vocab)
    if backend is None:
        raise TokenizerError(f"{model_file}: unsupported SentencePiece model type {proto.trainer_spec.model_type}.")
    if nfc:
        backend.normalizer = normalizers.Sequence([normalizers.NFC(), backend.normalizer])
    return backend


def _from_hub(name: str, roles: tuple[str, ...], quiet: bool) -> LoadedTokenizer:
    path = Path(name)

    def missing() -> str:
        nearby = sorted(p.name for p in path.parent.iterdir() if p.is_dir())[:12] if path.parent.is_dir() else []
        return f"no tokenizer folder {name}: it does not exist" + (
            f" ({path.parent} holds {', '.join(nearby)})" if nearby and path.parent != Path(".") else "")

    if path.is_absolute() or name.startswith("."):  # a path, not a hub name: no hub to ask
        raise TokenizerError(f"{missing()}. Pass the folder tools/train_tokenizer.py wrote, or a Hugging Face hub name.")
    try:
        from transformers import AutoTokenizer

        hf = AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError) as exc:
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        raise TokenizerError(
            f"{missing()}, and the Hugging Face hub has no tokenizer {name!r}"
            f"{' (HF_HUB_OFFLINE=1)' if offline else ''}: {str(exc).splitlines()[0].rstrip('.')}. Check the path, "
            f"or download the tokenizer first (huggingface-cli download {name} --local-dir DIR) and pass DIR."
        ) from exc
    backend = getattr(hf, "backend_tokenizer", None)
    if backend is None:
        raise TokenizerError(f"{name} has no fast (tokenizers) version; convert it or pass its folder.")
    declared = {role: getattr(hf, name, None) for role in ROLES for name in HF_NAMES[role]}
    return from_backend(backend, name, {k: str(v) for k, v in declared.items() if v}, False, None, roles, quiet)
