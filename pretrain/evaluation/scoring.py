"""Scoring documents one by one: causal LMs with lm-evaluation-harness's rolling windows, masked LMs
with the trainer's deterministic masking.

**Causal LMs** (``loglikelihood_rolling``, lm-eval 0.4, ``context_len=1``): a document's tokens, after
a prefix token (the tokenizer's BOS, else its EOS), are cut into disjoint runs of ``max_length``
predictions. The model reads ``max_length`` tokens for each: the first run from the prefix on, every
later one from the token before it on, and the last, shorter one with as much preceding text as fills
the window. Every token is predicted exactly once; the document's log-likelihood is the sum. Windows of
many documents run together in batches sorted by length (right-padded: causal attention never looks
at the padding), which changes nothing but rounding.

**Masked LMs**: each document is cut into pieces of ``max_length - 2`` tokens, each wrapped as
``[CLS] piece [SEP]`` and masked as the trainer masks (``pretrain.data.masking.mask_tokens``: the
same share, whole words, 80/10/10 corruption) from a generator seeded by (seed, document, piece), so
the same model and text always get the same masks. The loss is the mean over masked tokens.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from pretrain.data.masking import IGNORE_INDEX, MaskingSpec, mask_tokens

GROUP_WINDOWS = 256  # windows gathered before sorting into batches: memory stays flat in the corpus size


@dataclass(frozen=True)
class Window:
    inputs: list[int]
    targets: list[int]  # inputs shifted by one: what each position predicts
    scored: int  # only the last ``scored`` targets count (the earlier ones are context)


@dataclass
class Totals:
    """Sums over documents: negative log-likelihood in nats, predicted tokens, UTF-8 bytes; each
    document's nll too when ``keep_documents`` (memory then grows with the documents)."""

    keep_documents: bool = False
    documents: int = 0
    tokens: int = 0
    bytes: int = 0
    nll: float = 0.0
    per_document: list[float] = field(default_factory=list)  # each document's nll, in input order

    def add_documents(self, nll: list[float]) -> None:
        self.nll += math.fsum(nll)
        if self.keep_documents:
            self.per_document += nll

    def add(self, other: Totals) -> None:
        self.documents += other.documents
        self.tokens += other.tokens
        self.bytes += other.bytes
        self.nll += other.nll
        self.per_document += other.per_document

    def figures(self, objective: str) -> dict:
        """loss and perplexity per predicted token, bits per byte (causal LMs); None where nothing was scored."""
        loss = self.nll / self.tokens if self.tokens else None
        out = {"documents": self.documents, "tokens" if objective == "clm" else "masked_tokens": self.tokens,
               "bytes": self.bytes, "nll_nats": self.nll, "loss": loss,
               "perplexity": None if loss is None else math.exp(min(loss, 50.0)),
               "bits_per_byte": self.nll / math.log(2) / self.bytes if objective == "clm" and self.bytes else None}
        if self.keep_documents:
            out["document_nll_nats"] = self.per_document
        return out


def rolling_windows(tokens: list[int], prefix_token: int, max_length: int) -> list[Window]:
    """lm-eval's ``get_rolling_token_windows(..., context_len=1)`` made disjoint, as (inputs, targets)
    of at most ``max_length`` positions."""
    if max_length < 1:
        raise ValueError(f"max_length must be at least 1, not {max_length}")
    sequence = [prefix_token, *tokens]  # sequence[i + 1] is tokens[i]
    windows, done = [], 0
    while done < len(tokens):
        scored = min(max_length, len(tokens) - done)
        end = done + scored  # this window predicts sequence[done + 1 : end + 1]
        start = max(0, end - max_length)
        windows.append(Window(sequence[start:end], sequence[start + 1 : end + 1], scored))
        done = end
    return windows


def score_causal(model: torch.nn.Module, documents: Iterable[tuple[list[int], int]], prefix_token: int,
                 max_length: int, batch_tokens: int, keep_documents: bool = False) -> Totals:
    """Totals over ``documents``: (token ids, UTF-8 bytes of its text) each, scored with rolling windows."""
    totals = Totals(keep_documents)
    group: list[tuple[int, Window]] = []  # (document within the group, window)
    in_group = 0
    for tokens, size in documents:
        totals.documents += 1
        totals.tokens += len(tokens)
        totals.bytes += size
        group += [(in_group, w) for w in rolling_windows(list(tokens), prefix_token, max_length)]
        in_group += 1
        if len(group) >= GROUP_WINDOWS:
            totals.add_documents(_score_windows(model, group, in_group, batch_tokens))
            group, in_group = [], 0
    totals.add_documents(_score_windows(model, group, in_group, batch_tokens))
    return totals


@torch.no_grad()
def _score_windows(model: torch.nn.Module, group: list[tuple[int, Window]], documents: int,
                   batch_tokens: int) -> list[float]:
    """The nll of each of the group's ``documents``: the sum over its windows."""
    nll = [0.0] * documents
    if not group:
        return nll
    device = next(model.parameters()).device
    group = sorted(group, key=lambda item: -len(item[1].inputs))
    for batch in _batches(group, batch_tokens, lambda item: len(item[1].inputs)):
        width = len(batch[0][1].inputs)
        inputs = torch.zeros(len(batch), width, dtype=torch.long)
        targets = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
        for row, (_, window) in enumerate(batch):
            length = len(window.inputs)
            inputs[row, :length] = torch.tensor(window.inputs)
            targets[row, length - window.scored : length] = torch.tensor(window.targets[length - window.scored :])
        logits = model(input_ids=inputs.to(device)).logits.float()
        values = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets.to(device),
                                                   ignore_index=IGNORE_INDEX, reduction="none").double().sum(1)
        for (document, _), value in zip(batch, values.tolist()):
            nll[document] += value
    return nll


def _batches(items: list, batch_tokens: int, length) -> Iterator[list]:
    """Consecutive items (longest first) in batches of at most ``batch_tokens`` padded positions."""
    batch: list = []
    for item in items:
        if batch and (len(batch) + 1) * length(batch[0]) > batch_tokens:
            yield batch
            batch = []
        batch.append(item)
    if batch:
        yield batch


@dataclass(frozen=True)
class MaskedSetup:
    cls: int
    sep: int
    pad: int
    special: np.ndarray  # the special ids: never masked
    masking: MaskingSpec
    seed: int


def score_masked(model: torch.nn.Module, documents: Iterable[tuple[np.ndarray, int]], setup: MaskedSetup,
                 max_length: int, batch_tokens: int, keep_documents: bool = False) -> Totals:
    """Totals over ``documents`` ((token ids, UTF-8 bytes) each): masked-token loss of every piece."""
    totals = Totals(keep_documents)
    width = max_length - 2
    pending: list[tuple[int, np.ndarray, np.ndarray]] = []  # (document within the group, inputs, labels)
    in_group = 0
    for tokens, size in documents:
        for piece, start in enumerate(range(0, len(tokens), width)):
            ids = np.concatenate([[setup.cls], tokens[start : start + width], [setup.sep]]).astype(np.int64)
            rng = np.random.default_rng([setup.seed, totals.documents, piece])
            inputs, labels = mask_tokens(ids, ~np.isin(ids, setup.special), setup.masking, rng)
            pending.append((in_group, inputs, labels))
        totals.documents += 1
        totals.bytes += size
        in_group += 1
        if len(pending) >= GROUP_WINDOWS:
            totals.add_documents(_score_pieces(model, pending, in_group, totals, setup.pad, batch_tokens))
            pending, in_group = [], 0
    totals.add_documents(_score_pieces(model, pending, in_group, totals, setup.pad, batch_tokens))
    return totals


@torch.no_grad()
def _score_pieces(model: torch.nn.Module, pieces: list, documents: int, totals: Totals, pad: int,
                  batch_tokens: int) -> list[float]:
    """The masked-token nll of each of the group's ``documents``; masked tokens counted into ``totals``."""
    nll = [0.0] * documents
    if not pieces:
        return nll
    device = next(model.parameters()).device
    pieces = sorted(pieces, key=lambda item: -len(item[1]))
    for batch in _batches(pieces, batch_tokens, lambda item: len(item[1])):
        width = len(batch[0][1])
        inputs = torch.full((len(batch), width), pad, dtype=torch.long)
        labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros(len(batch), width, dtype=torch.long)
        for row, (_, ids, targets) in enumerate(batch):
            inputs[row, : len(ids)] = torch.from_numpy(ids)
            labels[row, : len(ids)] = torch.from_numpy(targets)
            mask[row, : len(ids)] = 1
        # no token_type_ids: BERT's default is segment 0 (one piece is one segment), and ModernBERT has none
        logits = model(input_ids=inputs.to(device), attention_mask=mask.to(device)).logits.float()
        labels = labels.to(device)
        values = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels, ignore_index=IGNORE_INDEX,
                                                   reduction="none").double().sum(1)
        totals.tokens += int((labels != IGNORE_INDEX).sum())
        for (document, _, _), value in zip(batch, values.tolist()):
            nll[document] += value
    return nll
