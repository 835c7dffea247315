"""Morpheme-aware tokenizer training (--morphemes ko): no vocabulary piece spans two morphemes of a
Korean eojeol, the result loads and encodes with no analyzer, round-trips held-out Korean, the analyzer
runs streamed over every worker, and whole-word masking can follow morphemes."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from pretrain.tokenization import TokenizerError, load_tokenizer
from pretrain.tokenization.morphemes import MARKER, MorphemeMarker, boundaries, mark_documents, morpheme_segments
from pretrain.tokenization.report import byte_level_alphabet
from pretrain.tokenization.training import TokenizerTrainingOptions, train_tokenizer
from tests.conftest import grown_documents, read_documents, run_tool, write_jsonl

pytest.importorskip("mecab_ko", reason="the [ko] extra (mecab-ko) is part of the test install")
KINDS = ("bpe", "wordpiece", "spm-unigram")
TO_BYTE = byte_level_alphabet()


@pytest.fixture(scope="module", params=["grown", "real"])
def korean(request, tmp_path_factory) -> dict:
    """Training text and held-out documents: the demo's Korean grown, or the real Korean help pages."""
    if request.param == "grown":
        docs = [d for d in grown_documents(count=400, seed=5) if "다" in d]
        held_out = [d for d in grown_documents(count=200, seed=11)[-200:] if "다" in d]
    else:
        files = request.getfixturevalue("corpus_files")
        every = read_documents(files["ko.libreoffice-help-ko"])
        docs, held_out = every[:300], every[-80:] + read_documents(files["ko.debian-faq-ko"], 5)
    folder = tmp_path_factory.mktemp(f"ko-{request.param}")
    return {"file": write_jsonl(folder / "ko.jsonl", docs), "docs": docs, "held_out": held_out, "folder": folder,
            "vocab": 750 if request.param == "grown" else 3000}  # what unigram reaches on each


@pytest.fixture(scope="module")
def trained(korean) -> dict:
    out = {}
    for kind in KINDS:
        for morphemes in ("ko", None):
            folder = korean["folder"] / f"{kind}-{morphemes}"
            train_tokenizer(TokenizerTrainingOptions(kind=kind, inputs=[str(korean["file"])], output=str(folder),
                                                     vocab_size=korean["vocab"], morphemes=morphemes,
                                                     workers=2 if kind == "bpe" else 1))  # the pool once: spawning costs
            out[kind, morphemes] = folder
    return out


def piece_text(token: str, family: str) -> str | None:
    """A vocabulary piece as text, word markers removed; None for part of a character's bytes."""
    if family == "byte_bpe":
        try:
            token = bytes(TO_BYTE[c] for c in token).decode("utf-8")
        except (KeyError, UnicodeDecodeError):
            return None
        return token.lstrip(" ")
    return token.removeprefix("##").lstrip("▁")


def spanning_pieces(folder, korean) -> list[str]:
    """Hangul pieces of the vocabulary that occur in no morpheme of the training text (as the analyzer
    splits it): pieces that join two morphemes."""
    marker = MorphemeMarker()
    morphemes = "\n".join(sorted({m for d in korean["docs"] for m in morpheme_segments(marker(d))}))
    tok = load_tokenizer(folder)
    bad = []
    for token in tok.backend.get_vocab(with_added_tokens=False):
        text = piece_text(token, tok.family)
        if text and any("\uac00" <= c <= "\ud7a3" for c in text) and text not in morphemes:
            bad.append(text)
    return bad


@pytest.mark.parametrize("kind", KINDS)
def test_no_piece_spans_a_morpheme_boundary(trained, korean, kind):
    assert spanning_pieces(trained[kind, "ko"], korean) == []
    # the same check finds such pieces in the plain tokenizer trained on the same text
    assert len(spanning_pieces(trained[kind, None], korean)) >= 3


@pytest.fixture(scope="module")
def in_transformers(trained, korean) -> dict:
    """Each morpheme-aware folder through AutoTokenizer, in one process where mecab_ko cannot be imported:
    the ids of the held-out documents and their decoding."""
    import subprocess

    folders = {kind: str(trained[kind, "ko"]) for kind in KINDS}
    held = write_jsonl(korean["folder"] / "held.jsonl", korean["held_out"])
    script = (
        "import sys, json; sys.modules['mecab_ko'] = None\n"
        "from transformers import AutoTokenizer\n"
        f"docs = [json.loads(l)['text'] for l in open({str(held)!r})]\n"
        "out = {}\n"
        f"for kind, folder in {folders!r}.items():\n"
        "    t = AutoTokenizer.from_pretrained(folder)\n"
        "    ids = [t(d, add_special_tokens=False)['input_ids'] for d in docs]\n"
        "    out[kind] = {'ids': ids, 'back': [t.decode(i) for i in ids]}\n"
        "print(json.dumps(out))\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return json.loads(proc.stdout)


@pytest.mark.parametrize("kind", KINDS)
def test_loads_in_transformers_without_the_analyzer_and_round_trips(trained, korean, in_transformers, kind):
    """A plain tokenizer.json: AutoTokenizer with no analyzer gives the ids this project gives, and decoding
    held-out Korean gives it back (BPE, SentencePiece; BERT's WordPiece decoder puts spaces around
    punctuation, so it never round-trips, plain or not)."""
    folder = trained[kind, "ko"]
    ours = load_tokenizer(folder)
    held = korean["held_out"]
    theirs = in_transformers[kind]
    assert theirs["ids"] == ours.encode(held)
    if kind != "wordpiece":
        assert theirs["back"] == held
        assert [ours.decode(ids) for ids in ours.encode(held)] == held
    assert {"morphemes.json", "tokenizer.json"} <= {p.name for p in folder.iterdir()}
    if kind == "bpe":
        assert (folder / "vocab.json").exists() and (folder / "merges.txt").exists()


def test_morpheme_aware_pieces_are_shorter_units_of_meaning(trained, korean):
    """학교에 (school + at) is learned as 학교 | 에 with morphemes; the marks never reach the vocabulary."""
    for kind in KINDS:
        tok = load_tokenizer(trained[kind, "ko"])
        assert not any(MARKER in t for t in tok.backend.get_vocab()), kind
        assert tok.vocab_size == korean["vocab"], kind


def test_boundaries_inside_hangul_eojeols_only():
    text = "학교에 갔다 LibreOffice에서 Straße-Name 된다"
    # spans as an analyzer gives them; 된다 as Kiwi gives it: 되 [0,1) and ㄴ다 [0,2) overlap
    spans = [(0, 2), (2, 3), (4, 5), (5, 6), (7, 18), (18, 20), (21, 27), (27, 28), (28, 32), (33, 34), (33, 35)]
    assert boundaries(text, spans) == [2, 5, 18]


def test_marking_is_ordered_and_streams_with_bounded_lookahead(monkeypatch):
    """Every worker is used, output order is input order, and the pool never reads more than
    2 x workers + 2 batches ahead of what it has given back (memory stays flat)."""
    import pretrain.tokenization.morphemes as morphemes

    monkeypatch.setattr(morphemes, "BATCH_BYTES", 1)  # one document per batch
    docs = [d for d in grown_documents(count=60, seed=2) if "다" in d]
    consumed = []

    def source():
        for index, doc in enumerate(docs):
            consumed.append(index)
            yield doc

    stream = mark_documents(source(), workers=2)
    first = next(stream)
    assert len(consumed) <= 2 * 2 + 2 + 1
    rest = list(stream)
    assert [first, *rest] == list(mark_documents(iter(docs), workers=1))
    assert sum(MARKER in d for d in rest) > len(docs) // 2


def test_missing_analyzer_is_a_clear_error(monkeypatch, korean, tmp_path):
    monkeypatch.setitem(sys.modules, "mecab_ko", None)
    with pytest.raises(TokenizerError, match=r"pip install 'pretrain\[ko\]'"):
        train_tokenizer(TokenizerTrainingOptions(kind="bpe", inputs=[str(korean["file"])],
                                                 output=str(tmp_path / "t"), morphemes="ko"))
    assert not (tmp_path / "t").exists()
    proc = run_tool("train_tokenizer", "--input", korean["file"], "--output", tmp_path / "k", "--morphemes", "ko",
                    "--analyzer", "kiwipiepy", check=False)
    if "kiwipiepy" not in sys.modules:
        assert proc.returncode == 2 and "pip install kiwipiepy" in proc.stderr and "Traceback" not in proc.stderr


def test_whole_word_unit_morpheme(trained, tmp_path):
    from pretrain.data.masking import MaskingSpec, mask_tokens

    tok = load_tokenizer(trained["bpe", "ko"])
    eojeol, morpheme = tok.unit_starts("eojeol"), tok.unit_starts("morpheme")
    assert (morpheme >= eojeol).all() and morpheme.sum() > eojeol.sum() + 50
    ids = np.asarray(tok.encode(["학생들이 도서관에서 책을 읽었습니다. 파일을 저장합니다."])[0])
    assert morpheme[ids].sum() > eojeol[ids].sum()  # 들, 이, 에서, 을 ... begin units of their own
    # masking by morphemes masks smaller units: more of them for the same budget
    rng_units = []
    for starts in (eojeol, morpheme):
        spec = MaskingSpec(tok.specials.mask, 0.3, True, starts, np.arange(10, 100))
        inputs, labels = mask_tokens(ids, np.ones(len(ids), dtype=bool), spec, np.random.default_rng(0))
        rng_units.append(int(starts[ids][labels != -100].sum()))
    assert rng_units[1] > rng_units[0]
    with pytest.raises(TokenizerError, match="trained with --morphemes ko"):
        load_tokenizer(trained["bpe", None]).unit_starts("morpheme")


def test_whole_word_unit_in_the_config():
    from pretrain.config import ConfigError, load_config

    assert load_config("tiny_mlm", ["data.whole_word_unit=morpheme"]).data.whole_word_unit == "morpheme"
    with pytest.raises(ConfigError, match="whole_word_unit"):
        load_config("tiny_mlm", ["data.whole_word_unit=syllable"])
