"""Special tokens a model needs, found in a tokenizer's files or added (and said so).

Six roles:

    eod   end of document, appended by --append-eod and separating packed CLM documents
    pad   padding                     cls / sep   [CLS] A [SEP] B [SEP] of MLM samples
    mask  the MLM mask token          unk         unknown token

A role is taken, in order, from the tokenizer's config files, from a well-known token already in
the vocabulary, or from an alias within the family (GPT-2 uses end-of-text as unknown; WordPiece uses
[SEP] as end of document). A role found none of these ways is added as a new special token at the end
of the vocabulary only when the caller asks for it (``roles``, a model family's ``tokenizer_roles``; eod
always). A causal LM asks for eod alone, so a released tokenizer (Llama's, GPT-2's) keeps its vocabulary
and encodes a literal "<s>" or "<mask>" in text as the release does; a masked LM asks for all six.

Added roles follow the vocabulary in ROLES order, eod first. So every load of one folder gives its tokens
the same ids, and what a load with fewer roles lacks lies past its vocabulary: the ids preprocessing
writes (its load asks for eod alone) mean the same to every training run.
"""

from __future__ import annotations

from dataclasses import dataclass, field

ROLES = ("eod", "pad", "cls", "sep", "mask", "unk")
# HF config names for each role, most specific first
HF_NAMES = {
    "eod": ("eos_token",), "pad": ("pad_token",), "cls": ("cls_token",),
    "sep": ("sep_token",), "mask": ("mask_token",), "unk": ("unk_token",),
}
KNOWN = {
    "eod": ("<|endoftext|>", "</s>", "<eos>", "<|end_of_text|>", "[EOS]"),
    "pad": ("<pad>", "[PAD]", "<|pad|>"),
    "cls": ("[CLS]", "<s>", "<cls>"),
    "sep": ("[SEP]", "</s>", "<sep>"),
    "mask": ("[MASK]", "<mask>"),
    "unk": ("<unk>", "[UNK]", "<|unk|>"),
}
ALIASES = {  # family -> role -> role it may share a token with
    "byte_bpe": {"unk": "eod"},
    "wordpiece": {"eod": "sep"},
    "sentencepiece": {"sep": "eod"},
}
DEFAULTS = {  # family -> role -> token added when none is found
    "byte_bpe": {"eod": "<|endoftext|>", "pad": "<pad>", "cls": "<s>", "sep": "</s>", "mask": "<mask>", "unk": "<unk>"},
    "wordpiece": {"eod": "[SEP]", "pad": "[PAD]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]", "unk": "[UNK]"},
    "sentencepiece": {"eod": "</s>", "pad": "<pad>", "cls": "<s>", "sep": "</s>", "mask": "<mask>", "unk": "<unk>"},
}
# what each role is called in a Hugging Face tokenizer_config.json
HF_CONFIG_KEYS = {"eod": "eos_token", "pad": "pad_token", "cls": "cls_token", "sep": "sep_token",
                  "mask": "mask_token", "unk": "unk_token"}


class TokenizerError(ValueError):
    """A tokenizer path or name that cannot be loaded; the message says what to do."""


@dataclass
class SpecialTokens:
    """The token string and id of each role found or added, and the roles that had to be added."""

    tokens: dict[str, str] = field(default_factory=dict)
    ids: dict[str, int] = field(default_factory=dict)
    added: list[str] = field(default_factory=list)  # roles whose token this load appended to the vocabulary

    def __getattr__(self, role: str) -> int:
        if role in ROLES and role in self.ids:
            return self.ids[role]
        if role in ROLES:
            raise AttributeError(f"the tokenizer has no {role} token: load it with roles=(..., {role!r})")
        raise AttributeError(role)

    def describe_added(self) -> str:
        return ", ".join(f"{self.tokens[role]} (id {self.ids[role]}) as {role}" for role in self.added)


def config_token(value) -> str | None:
    """A token as written in tokenizer_config.json: a string or an AddedToken dict."""
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


def resolve_specials(backend, family: str, declared: dict[str, str], roles=("eod",)) -> SpecialTokens:
    """Find every role on ``backend`` (a ``tokenizers.Tokenizer``, modified in place), and add those of ``roles``
    (and eod) it lacks.

    Chosen tokens are registered as special (split out of text, skipped when decoding), as
    Hugging Face's tokenizers do with the tokens named in their config.
    """
    from tokenizers import AddedToken

    vocab = backend.get_vocab(with_added_tokens=True)
    registered = {t.content for t in backend.get_added_tokens_decoder().values()}

    def find(role: str) -> str | None:
        token = declared.get(role)
        if token is not None and token in vocab:
            return token
        # in a byte-level vocabulary "<s>" may be ordinary text: only trust registered tokens there
        return next((t for t in KNOWN[role] if t in vocab and
                     (family != "byte_bpe" or t in registered or t == "<|endoftext|>")), None)

    specials = SpecialTokens()
    aliases = ALIASES.get(family, {})
    for role in ROLES:
        token = find(role)
        if token is None and role in aliases:
            token = specials.tokens.get(aliases[role]) or find(aliases[role])
        if token is None:
            if role != "eod" and role not in roles:
                continue
            token = DEFAULTS.get(family, DEFAULTS["sentencepiece"])[role]
        if token not in registered:
            if token not in vocab:
                _check_room_for_a_new_id(backend, vocab, token)
            backend.add_special_tokens([AddedToken(token, special=True, normalized=False)])
            registered.add(token)
            if token not in vocab:
                vocab = backend.get_vocab(with_added_tokens=True)
                specials.added.append(role)
        specials.tokens[role] = token
        specials.ids[role] = vocab[token]
    return specials


def _check_room_for_a_new_id(backend, vocab: dict[str, int], token: str) -> None:
    """A vocabulary with an id no token has (a vocab.txt with a line repeated: the token keeps its last line's id)
    counts fewer tokens than its highest id: ``tokenizers`` would give a new token an id a real token has."""
    highest = max(vocab.values(), default=-1)
    if highest + 1 > len(vocab):
        missing = next(i for i in range(highest + 1) if backend.id_to_token(i) is None)
        raise TokenizerError(f"the tokenizer's ids run to {highest} but it has {len(vocab)} tokens (no token has id "
                             f"{missing}: a line repeated in its vocab.txt?), so the {token!r} a model needs would "
                             "get the id of a token it already has. Remove the repeated line, or add the token to the "
                             "vocabulary yourself.")
