"""pretrain-tokenizer-report's measurements, worked out by hand on small cases, its files, and the
vocabulary-size sweep of pretrain-train-tokenizer --vocab-sizes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pretrain.tokenization import load_tokenizer
from pretrain.tokenization.report import document_language, fallback_ids, measure, pieces_per_word
from tests.conftest import read_documents, run_tool


def test_pieces_per_word_counts_every_token_overlapping_a_word():
    text = "ab  cde f"
    # "ab" in one piece; " c" (the space belongs to no word), "d", "e"; " f"; a token over "b  c" spans two words
    assert pieces_per_word(text, [(0, 2), (3, 5), (5, 6), (6, 7), (7, 9)]).tolist() == [1, 3, 1]
    assert pieces_per_word(text, [(1, 5)]).tolist() == [1, 1, 0]
    assert pieces_per_word("", []).tolist() == []


def test_document_language():
    assert document_language("한국어 위키백과는 자유 백과사전입니다. LibreOffice 도움말") == "ko"
    assert document_language("Die Katze sitzt auf dem Dach und schläft nicht.") == "de"
    assert document_language("The cat sits on the roof and does not sleep.") == "other"


def test_fallback_ids_are_bytes_of_a_character_and_unknown_tokens(tokenizer_dir):
    tok = load_tokenizer(tokenizer_dir)
    flags = fallback_ids(tok)
    vocab = tok.backend.get_vocab()
    assert flags[vocab["ì"]] and not flags[vocab["Ġ"]] and not flags[vocab["a"]]  # ì: the first byte of 3-byte Hangul
    whole = [t for t in vocab if len(t) == 4 and t.startswith("Ġ")]
    assert any(not flags[vocab[t]] for t in whole)


def test_measure_by_hand(tokenizer_dir):
    """Two documents, every figure counted by hand from the tokens."""
    tok = load_tokenizer(tokenizer_dir)
    docs = ["Die Katze und der Hund sind nicht da.", "학교에 갔습니다"]
    result = measure({"t": tok}, docs)["t"]
    for text, language in zip(docs, ("de", "ko")):
        encoding = tok.backend.encode(text, add_special_tokens=False)
        words = text.split()
        pieces = pieces_per_word(text, encoding.offsets)
        row = result[language]
        assert row["documents"] == 1 and row["words"] == len(words)
        assert row["tokens_per_word"] == pytest.approx(len(encoding.ids) / len(words))
        assert row["chars_per_token"] == pytest.approx(len(text) / len(encoding.ids))
        assert row["bytes_per_token"] == pytest.approx(len(text.encode()) / len(encoding.ids))
        assert row["words_3plus_pieces"] == pytest.approx((pieces >= 3).sum() / len(words))
        assert row["vocab_used"] == pytest.approx(len(set(encoding.ids)) / (tok.vocab_size - 6), rel=0.01)
        assert row["round_trip_exact"] == 1.0
    assert 0 < result["ko"]["fallback_rate"] < 1  # 갔 is not in a vocabulary grown from the demo: bytes


@pytest.fixture(scope="module")
def wordpiece(tmp_path_factory, small_corpus):
    from pretrain.tokenization.training import TokenizerTrainingOptions, train_tokenizer

    folder = tmp_path_factory.mktemp("wp") / "wp"
    train_tokenizer(TokenizerTrainingOptions(kind="wordpiece", inputs=[str(small_corpus)], output=str(folder),
                                             vocab_size=800))
    return folder


def test_report_command_writes_markdown_json_and_chart(tmp_path, small_corpus, tokenizer_dir, wordpiece):
    out = tmp_path / "report"
    proc = run_tool("tokenizer_report", f"bpe={tokenizer_dir}", str(wordpiece / "tokenizer.json"), "--input",
                    small_corpus, "--output", out)
    report = json.loads((out / "report.json").read_text())
    assert set(report["results"]) == {"bpe", "wp"} and set(report["results"]["bpe"]) >= {"ko", "de"}
    assert report["results"]["bpe"]["ko"]["round_trip_exact"] == 1.0
    assert 0 < report["results"]["wp"]["de"]["vocab_used"] < 1
    assert "| bpe | 1,024 |" in (out / "report.md").read_text() and "## Korean (word = eojeol)" in proc.stdout
    assert (out / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = run_tool("tokenizer_report", tmp_path / "nothing-here", "--input", small_corpus, check=False)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


def test_report_on_real_text_with_the_shared_bpe(tmp_path, corpus_files, shared_bpe):
    """The multilingual BPE on the real help pages: about 2.6 characters per token in Korean, 3.4 in German
    (its README's figures), and Korean costs more tokens per word than German."""
    texts = (read_documents(corpus_files["ko.libreoffice-help-ko"], 150)
             + read_documents(corpus_files["de.libreoffice-help-de"], 150))
    result = measure({"m": load_tokenizer(shared_bpe)}, texts, morphemes=True)["m"]
    assert 2.0 < result["ko"]["chars_per_token"] < 3.2 and 2.8 < result["de"]["chars_per_token"] < 4.0
    assert result["ko"]["tokens_per_word"] > result["de"]["tokens_per_word"]
    # a vocabulary learned without morphemes has pieces across them: 학교에 as one piece, say
    assert result["ko"]["tokens_crossing_morphemes"] > 0.02 and "tokens_crossing_morphemes" not in result["de"]
    assert result["ko"]["round_trip_exact"] == result["de"]["round_trip_exact"] == 1.0


def test_vocab_size_sweep(tmp_path, small_corpus):
    out = tmp_path / "sweep"
    bad = tmp_path / "bad.jsonl"  # one record that is not JSON, skipped and counted as a single training run does
    bad.write_text('{"text": "Ein Satz."}\n{"text": \n', encoding="utf-8")
    printed = run_tool("train_tokenizer", "--input", small_corpus, bad, "--output", out, "--vocab-sizes",
                       "400,800,1600", "--preset", "tiny-gpt2", "--skip-bad-input")
    assert "Skipped as bad input: 1 (" in printed.stdout, printed.stdout
    result = json.loads((out / "sweep.json").read_text())
    assert sum(result["skipped"].values()) == 1
    points = result["points"]
    assert [p["vocab_size"] for p in points] == [400, 800, 1600]
    for language in ("ko", "de"):
        per_word = [p["tokens_per_word"][language] for p in points]
        assert per_word[0] > per_word[1] > per_word[2]
    shares = [p["embedding_share"] for p in points]
    assert shares[0] < shares[1] < shares[2] and points[0]["embedding_parameters"] == 448 * 64
    best = points[-1]["tokens_per_word"][result["main_language"]]
    chosen = next(p for p in points if p["vocab_size"] == result["recommended"])
    assert chosen["tokens_per_word"][result["main_language"]] <= 1.03 * best
    assert all(p["tokens_per_word"][result["main_language"]] > 1.03 * best
               for p in points if p["vocab_size"] < result["recommended"])
    assert {"tokenizer.json", "vocab.json"} <= {f.name for f in (out / "1600").iterdir()}
    assert "Recommended" in (out / "sweep.md").read_text()
    bad = run_tool("train_tokenizer", "--input", small_corpus, "--output", tmp_path / "x", "--vocab-sizes", "1k,2k",
                   check=False)
    assert bad.returncode == 2 and "whole numbers" in bad.stderr


def test_vocab_used_grows_with_the_text(tokenizer_dir, small_corpus):
    tok = load_tokenizer(tokenizer_dir)
    texts = [json.loads(line)["text"] for line in small_corpus.read_text().splitlines()]
    texts = [t for t in texts if "다" in t]
    few, many = measure({"t": tok}, texts[:5])["t"], measure({"t": tok}, texts)["t"]
    assert few["ko"]["vocab_used"] < many["ko"]["vocab_used"] <= 1.0
    assert np.isclose(many["ko"]["round_trip_exact"], 1.0)


def test_the_size_rule_picks_the_smallest_size_within_3_percent():
    from pretrain.tokenization.vocab_sweep import recommend

    per_word = [2.0, 1.6, 1.5, 1.46]  # 1.5 is within 3% of 1.46, 1.6 is not
    points = [{"vocab_size": size, "tokens_per_word": {"ko": tpw, "de": 9.0}, "held_out_words": {"ko": 100, "de": 10}}
              for size, tpw in zip((16000, 32000, 50257, 64000), per_word)]
    result = recommend(points)
    assert result["recommended"] == 50257 and result["main_language"] == "ko"
