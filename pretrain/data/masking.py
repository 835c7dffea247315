"""BERT masking: choose ``mask_prob`` of the tokens (whole words by default) and corrupt them
80% [MASK] / 10% random token / 10% unchanged; labels are the original ids there and -100
elsewhere. Special tokens are never chosen. Everything draws from the generator it is given, so a
sample's masks depend only on (seed, sample index) and a resumed run sees the same masks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

IGNORE_INDEX = -100


def max_predictions(seq_len: int, mask_prob: float, packed: bool = False) -> int:
    """The most positions ``mask_tokens`` chooses in a sample of ``seq_len`` tokens: the fixed width of a
    batch's ``masked_positions``. Sentence pairs: [CLS] and one [SEP] at least are never candidates; packed
    documents (data.document_mask): only the sample's first token, where the list pads (a sample cut inside
    one document holds no special token)."""
    return max(1, int(round((seq_len - (1 if packed else 2)) * mask_prob)))


@dataclass(frozen=True)
class MaskingSpec:
    mask_id: int
    mask_prob: float
    whole_word: bool
    word_starts: np.ndarray  # bool per vocabulary id: begins a unit (an eojeol, or a morpheme: data.whole_word_unit)
    random_ids: np.ndarray  # ids a "random token" is drawn from (no special tokens)


def mask_tokens(tokens: np.ndarray, maskable: np.ndarray, spec: MaskingSpec,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Corrupt ``tokens`` (1-D) at chosen ``maskable`` positions; return (inputs, labels)."""
    inputs = tokens.copy()
    labels = np.full(tokens.shape, IGNORE_INDEX, dtype=np.int64)
    candidates = np.flatnonzero(maskable)
    if len(candidates) == 0:
        return inputs, labels
    budget = max(1, int(round(len(candidates) * spec.mask_prob)))
    if spec.whole_word:
        # a word starts at a word-start token, or after a special token / segment boundary
        starts = spec.word_starts[tokens[candidates]].copy()
        starts |= np.concatenate([[True], np.diff(candidates) != 1])
        word_of = np.cumsum(starts) - 1
        first = np.flatnonzero(starts)
        sizes = np.diff(np.append(first, len(candidates)))
        chosen = np.zeros(len(first), dtype=bool)
        # words in random order are taken while they fit the budget; one that would overshoot is
        # skipped and the next tried. The leading run that fits is taken at once; the tail, a few
        # words, is walked one by one.
        order = rng.permutation(len(first))
        running = np.cumsum(sizes[order])
        fits = int(np.searchsorted(running, budget, side="right"))
        chosen[order[:fits]] = True
        total = int(running[fits - 1]) if fits else 0
        for word in order[fits:]:
            if total >= budget:
                break
            if total + sizes[word] <= budget:
                chosen[word] = True
                total += int(sizes[word])
        positions = candidates[chosen[word_of]]
    else:
        positions = np.sort(rng.choice(candidates, size=budget, replace=False))
    labels[positions] = tokens[positions]
    roll = rng.random(len(positions))
    inputs[positions[roll < 0.8]] = spec.mask_id
    randomized = positions[(roll >= 0.8) & (roll < 0.9)]
    inputs[randomized] = spec.random_ids[rng.integers(0, len(spec.random_ids), len(randomized))]
    return inputs, labels
