"""Corpora as Korean and German users have them: MediaWiki dumps (plain, bz2, multistream with index),
the Namuwiki JSON array, NIKL-shaped nested JSON, NFC normalization; on dumps written here and on the
real excerpts in ../shared/corpora/samples where present."""

from __future__ import annotations

import bz2
import json
import lzma
import re
import subprocess
import sys
import unicodedata

import numpy as np
import pytest

from pretrain.corpus import mediawiki, namuwiki
from pretrain.data.indexed import IndexedDataset
from tests import corpus_samples
from tests.conftest import CORPORA, ROOT, require_shared, run_tool

MARKUP = ("{{", "}}", "[[", "]]", "'''", "<ref", "{|", "|}", "|-", "&lt;", "<!--", "__TOC__")
NAMU_MARKUP = ("{{{", "}}}", "[[", "]]", "'''", "||", "[*", "[include", "[목차]", "[br]", "~~", "##")


@pytest.fixture(scope="module")
def samples():
    require_shared()
    return CORPORA / "samples"


def blocks(handle, size=1 << 16):
    while True:
        block = handle.read(size)
        if not block:
            return
        yield block


def preprocess(tmp_path, name, *args, tokenizer):
    prefix = tmp_path / name
    proc = run_tool("preprocess_data", "--output-prefix", prefix, "--tokenizer", tokenizer, "--no-progress",
                    "--workers", "1", *args)
    return prefix, proc


# ----------------------------------------------------------------------------------- MediaWiki
def test_wikitext_becomes_what_the_reader_sees():
    text = mediawiki.clean_wikitext(corpus_samples.ARTICLE % {"title": "베를린", "number": ""})
    assert not [m for m in MARKUP if m in text], text
    assert text.split("\n")[0] == "베를린은 독일의 수도이다. 인구는 유럽 연합(EU)에서 가장 많다."
    lines = text.split("\n")
    assert "역사" in lines and "분단" in lines  # headings kept as lines
    assert "동베를린과 서베를린으로 나뉘었다." in lines  # list items as lines, link text kept
    for gone in ("도시 정보", "웹 인용", "출처 문장", "섬네일", "국가의회", "미테", "분류", "독일의 도시", "Berlin",
                 "편집 주석"):
        assert gone not in text, gone  # templates, references, files, tables, categories, interwiki, comments


def test_dump_reader_keeps_articles_and_skips_redirects_and_other_namespaces(tmp_path):
    path = corpus_samples.write_wiki_dump(tmp_path, count=30)
    pages = list(mediawiki.iter_pages(blocks(open(path, "rb"), 4096)))
    assert [p.title for p in pages] == [f"베를린 {n}" for n in range(30)]
    assert [p.page_id for p in pages] == list(range(100, 130))


@pytest.mark.parametrize("kind", ["plain", "bz2", "multistream"])
def test_sharded_dump_merges_to_the_single_run(tmp_path, tokenizer_dir, kind):
    dump = corpus_samples.write_wiki_dump(tmp_path, count=40, kind=kind)
    single, proc = preprocess(tmp_path, "single", "--input", dump, "--json-keys", "text", "title", tokenizer=tokenizer_dir)
    assert "text: 40 documents" in proc.stdout and "title: 40 documents" in proc.stdout
    documents = []
    for shard in range(3):
        _, proc = preprocess(tmp_path, "sharded", "--input", dump, "--shard-index", str(shard), "--num-shards", "3",
                             tokenizer=tokenizer_dir)
        documents.append(int(re.search(r"text: (\d+) documents", proc.stdout).group(1)))
    if kind == "bz2":
        assert sorted(documents) == [0, 0, 40]  # one bz2 stream: the whole file goes to one shard
    else:
        assert all(documents) and sum(documents) == 40, documents  # split at pages, or at the index's streams
    run_tool("merge_datasets", "--input", tmp_path / "sharded_text_document")
    for suffix in (".bin", ".idx"):
        assert (tmp_path / f"sharded_text_document{suffix}").read_bytes() == \
            (tmp_path / f"single_text_document{suffix}").read_bytes()
    from pretrain.tokenization import load_tokenizer

    titles = IndexedDataset(f"{single}_title_document")
    assert load_tokenizer(tokenizer_dir).decode(titles.document(7)) == "베를린 7"


def test_real_kowiki_article(samples, tmp_path):
    pages = list(mediawiki.iter_pages(blocks(bz2.open(samples / "kowiki-sample-pages-articles.xml.bz2"))))
    assert [p.title for p in pages] == ["베를린"]
    text = mediawiki.clean_wikitext(pages[0].text)
    assert not [m for m in MARKUP if m in text]
    assert "베를린은 독일의 수도이다." in text and "1961년에 동베를린과 서베를린의 경계에 베를린 장벽을 세웠는데" in text
    assert "역사" in text.split("\n") and "섬네일" not in text and "Berlin Montage" not in text


def test_real_jawiki_dump_cut_off_mid_page(samples, tmp_path, tokenizer_dir):
    path = samples / "jawiki-sample-pages-articles.xml.xz"
    pages = []
    with pytest.raises(mediawiki.TruncatedDump):
        for page in mediawiki.iter_pages(blocks(lzma.open(path))):
            pages.append(page)
    raw = lzma.open(path).read().decode()
    complete = raw.count("</page>")
    articles = sum(1 for block in raw.split("<page>")[1:] if "</page>" in block and "<ns>0</ns>" in block
                   and "<redirect" not in block)
    assert complete == 238 and len(pages) == articles
    for page in pages[:40]:
        cleaned = mediawiki.clean_wikitext(page.text)
        assert not [m for m in MARKUP if m in cleaned], page.title
    _, failed = preprocess_failing(tmp_path, path, tokenizer_dir)
    assert failed.returncode == 2 and "ends early after page id" in failed.stderr and "--skip-bad-input" in failed.stderr
    _, proc = preprocess(tmp_path, "ja", "--input", path, "--skip-bad-input", tokenizer=tokenizer_dir)
    assert f"text: {articles} documents" in proc.stdout and f"truncated (kept its complete records): {path}" in proc.stdout


def preprocess_failing(tmp_path, path, tokenizer):
    proc = run_tool("preprocess_data", "--output-prefix", tmp_path / "fail", "--tokenizer", tokenizer, "--no-progress",
                    "--input", path, check=False)
    return None, proc


# ------------------------------------------------------------------------------------ Namuwiki
def test_namumark_becomes_what_the_reader_sees():
    text = namuwiki.clean_namumark(corpus_samples.NAMUMARK % {"title": "파이썬", "number": 7})
    assert not [m for m in NAMU_MARKUP if m in text], text
    lines = text.split("\n")
    assert "개요" in lines  # a heading, as a line
    assert "파이썬는 로섬이 만든 언어이다. 농담이다 정말 쉽다." in lines  # link label, footnote gone, styles off
    assert "줄이 바뀐다." in lines and "큰 글씨와 빨간 글씨가 있다." in lines and "인용문은 남는다." in lines
    assert "목록 항목 하나 7" in lines
    for gone in ("동음이의", "분류", "숨겨질 코드", "편집자 주석", "logo", "1991년", "tablealign"):
        assert gone not in text, gone


def test_real_namuwiki_sample(samples):
    with open(samples / "namuwiki-sample.json", "rb") as handle:
        articles = list(namuwiki.iter_articles(handle))
    assert len(articles) == 7 and max(len(text) for _, _, text in articles) > 500_000
    for _, title, markup in articles:
        text = namuwiki.clean_namumark(markup)
        assert not [m for m in NAMU_MARKUP if m in text], title
        assert len(text) > 0.2 * len(markup) or len(markup) > 200_000, title
    first = namuwiki.clean_namumark(articles[0][2])
    assert "개그콘서트의 전 코너." in first and "남자친구(남궁경호)와 여자친구(김희원)의 아버지(유민상)" in first


def test_namuwiki_dump_shards_merge_to_the_single_run(tmp_path, tokenizer_dir):
    dump = corpus_samples.write_namu_dump(tmp_path / "namuwiki_test.json", corpus_samples.namu_records(30))
    _, proc = preprocess(tmp_path, "single", "--input", dump, tokenizer=tokenizer_dir)
    assert "text: 30 documents" in proc.stdout  # the template records (namespace 1) are skipped
    for shard in range(4):
        preprocess(tmp_path, "sharded", "--input", dump, "--shard-index", str(shard), "--num-shards", "4",
                   tokenizer=tokenizer_dir)
    run_tool("merge_datasets", "--input", tmp_path / "sharded_text_document")
    for suffix in (".bin", ".idx"):
        assert (tmp_path / f"sharded_text_document{suffix}").read_bytes() == \
            (tmp_path / f"single_text_document{suffix}").read_bytes()


# The peak from /proc (VmHWM, this process image only): getrusage's ru_maxrss survives exec on Linux, so it
# would report the forking test process's size instead.
MEMORY_PROBE = """
import re, sys
sys.path.insert(0, {root!r})
from pretrain.corpus.sources import resolve_inputs, read_chunks
file, = resolve_inputs([{path!r}])
documents = sum(len(chunk.data) for chunk in read_chunks(file, 0, file.size, "line", 1 << 20, ["text"]))
with open("/proc/self/status") as status:
    peak_kib = int(re.search(r"VmHWM:\\s+(\\d+)", status.read()).group(1))
print(documents, peak_kib // 1024)
"""


def write_namu_array(path, megabytes: int) -> int:
    """A single-line JSON array of ~``megabytes`` MB of Namuwiki articles; returns the article count."""
    record = corpus_samples.namu_records(1)[0]
    body = json.dumps({**record, "text": record["text"] * 40}, ensure_ascii=False)
    thousands = megabytes * 1_000_000 // len(body.encode()) // 1000
    block = ",".join([body] * 1000)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("[" + block)
        for _ in range(thousands - 1):
            handle.write("," + block)
        handle.write("]")
    return thousands * 1000


def read_peak_mib(path) -> tuple[int, int]:
    """(documents read, peak MiB of the reading process) for a dump read as preprocess_data reads it."""
    proc = subprocess.run([sys.executable, "-c", MEMORY_PROBE.format(root=str(ROOT), path=str(path))],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    documents, peak_mib = map(int, proc.stdout.split())
    return documents, peak_mib


def test_namuwiki_dump_is_read_in_constant_memory(tmp_path):
    """Single-line JSON arrays of 60 and 240 MB: the reader's peak memory does not grow with the file (a reader
    that kept a twentieth of the file would add 9 MiB between the two)."""
    peaks = {}
    for megabytes in (60, 240):
        path = tmp_path / f"namuwiki_{megabytes}.json"
        count = write_namu_array(path, megabytes)
        documents, peaks[megabytes] = read_peak_mib(path)
        assert documents == count
        path.unlink()
    assert peaks[240] - peaks[60] < 8, f"peak {peaks[60]} MiB for 60 MB, {peaks[240]} MiB for 240 MB: it grows with the file"


# ------------------------------------------------------------------------------ nested JSON
@pytest.mark.parametrize("spoken", [False, True])
def test_nikl_files_by_key_path(tmp_path, tokenizer_dir, spoken):
    from pretrain.tokenization import load_tokenizer

    unit = "utterance" if spoken else "paragraph"
    path = tmp_path / "NIKL_TEST.json"
    path.write_text(json.dumps(corpus_samples.nikl_file(4, spoken), ensure_ascii=False, indent=2), encoding="utf-8")
    prefix, proc = preprocess(tmp_path, "nikl", "--input", path, "--json-path", f"document[].{unit}[].form",
                              tokenizer=tokenizer_dir)
    dataset = IndexedDataset(f"{prefix}_text_document")
    assert dataset.num_documents == 4
    assert load_tokenizer(tokenizer_dir).decode(dataset.document(2)) == \
        "2번 문서의 1번째 문단입니다.\n2번 문서의 2번째 문단입니다.\n2번 문서의 3번째 문단입니다."
    lines = tmp_path / "nikl.jsonl"
    lines.write_text("\n".join(json.dumps(corpus_samples.nikl_file(2, spoken), ensure_ascii=False) for _ in range(3)))
    prefix, _ = preprocess(tmp_path, "nikl_lines", "--input", lines, "--json-path", f"document[].{unit}[].form",
                           tokenizer=tokenizer_dir)
    assert IndexedDataset(f"{prefix}_text_document").num_documents == 6  # two documents on each of three lines


def test_nested_json_without_or_with_a_wrong_path_says_what_to_do(tmp_path, tokenizer_dir):
    path = tmp_path / "NIKL_TEST.json"
    path.write_text(json.dumps(corpus_samples.nikl_file(2), ensure_ascii=False, indent=2), encoding="utf-8")
    without = run_tool("preprocess_data", "--input", path, "--tokenizer", tokenizer_dir, "--output-prefix",
                       tmp_path / "x", "--no-progress", check=False)
    assert without.returncode == 2 and "--json-path" in without.stderr and "Traceback" not in without.stderr
    lines = tmp_path / "n.jsonl"
    lines.write_text(json.dumps(corpus_samples.nikl_file(1), ensure_ascii=False) + "\n")
    wrong = run_tool("preprocess_data", "--input", lines, "--tokenizer", tokenizer_dir, "--output-prefix", tmp_path / "y",
                     "--no-progress", "--json-path", "document[].sentence[].form", check=False)
    assert wrong.returncode == 2 and f"{lines}:1: path not found" in wrong.stderr and "'sentence'" in wrong.stderr
    # a whole corpus on one line (a compact NIKL file): a document without the path costs itself, not the line
    record = corpus_samples.nikl_file(5)
    del record["document"][2]["paragraph"]
    compact = tmp_path / "compact.json"
    compact.write_text(json.dumps(record, ensure_ascii=False) + "\n", encoding="utf-8")
    one = run_tool("preprocess_data", "--input", compact, "--tokenizer", tokenizer_dir, "--output-prefix", tmp_path / "z",
                   "--no-progress", "--json-path", "document[].paragraph[].form", "--skip-bad-input")
    assert "skipped 1 records: path not found" in one.stdout and "document 3 of the line" in one.stdout, one.stdout
    assert IndexedDataset(f"{tmp_path / 'z'}_text_document").num_documents == 4


BOM_FILES = {  # a file's name -> its text after a UTF-8 byte-order mark (as Windows' Notepad saves files)
    "a.jsonl": '{"text": "Erstes"}\n{"text": "둘째"}\n', "a.txt": "Erstes\n둘째\n",
    "a.jsonl.gz": '{"text": "Erstes"}\n{"text": "둘째"}\n', "a.txt.zst": "Erstes\n둘째\n",
    "namuwiki_a.json": json.dumps([{"namespace": 0, "title": "A", "text": t} for t in ("Erstes", "둘째")]),
    "NIKL_A.json": json.dumps({"document": [{"paragraph": [{"form": t}]} for t in ("Erstes", "둘째")]}, indent=1),
}


@pytest.mark.parametrize("name", list(BOM_FILES))
def test_a_byte_order_mark_is_not_text(tmp_path, name):
    """As utf-8-sig reads: the mark at a file's start is neither a JSON error nor part of the first document."""
    import gzip

    import zstandard

    from pretrain.corpus.json_path import parse_path
    from pretrain.corpus.parsing import parse_chunk
    from pretrain.corpus.sources import read_chunks, resolve_inputs

    data = b"\xef\xbb\xbf" + BOM_FILES[name].encode()
    compress = {".gz": gzip.compress, ".zst": zstandard.ZstdCompressor().compress}.get(name[name.rfind("."):])
    (tmp_path / name).write_bytes(compress(data) if compress else data)
    path = parse_path("document[].paragraph[].form") if name.startswith("NIKL") else None
    texts = []
    for file in resolve_inputs([str(tmp_path / name)]):
        for chunk in read_chunks(file, 0, file.size, "line", 8, ["text"], path):
            parsed = parse_chunk(chunk, ["text"], path)
            assert not parsed.problems, parsed.problems
            texts += parsed.texts["text"]
    assert texts == ["Erstes", "둘째"]


# -------------------------------------------------------------------------------- normalization
def test_decomposed_korean_gives_the_ids_of_composed(tmp_path, small_corpus):
    """With a tokenizer that has no normalizer of its own, NFD text would become jamo pieces."""
    tokenizer = tmp_path / "raw_bpe"
    run_tool("train_tokenizer", "--input", small_corpus, "--output", tokenizer, "--vocab-size", "800",
             "--normalization", "none")
    texts = [json.loads(line)["text"] for line in small_corpus.open(encoding="utf-8")][:50]
    nfc, nfd = tmp_path / "nfc.jsonl", tmp_path / "nfd.jsonl"
    nfc.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts), encoding="utf-8")
    nfd.write_text("".join(json.dumps({"text": unicodedata.normalize("NFD", t)}, ensure_ascii=False) + "\n"
                           for t in texts), encoding="utf-8")
    composed, _ = preprocess(tmp_path, "nfc", "--input", nfc, tokenizer=tokenizer)
    decomposed, proc = preprocess(tmp_path, "nfd", "--input", nfd, tokenizer=tokenizer)
    assert (tmp_path / "nfd_text_document.bin").read_bytes() == (tmp_path / "nfc_text_document.bin").read_bytes()
    changed = sum(unicodedata.normalize("NFD", t) != t for t in texts)  # Hangul syllables, and German umlauts
    assert f"NFC: {changed} documents were not in NFC and were normalized" in proc.stdout
    kept, _ = preprocess(tmp_path, "kept", "--input", nfd, "--normalization", "none", tokenizer=tokenizer)
    assert IndexedDataset(f"{kept}_text_document").num_tokens > 1.5 * IndexedDataset(f"{composed}_text_document").num_tokens
    assert np.array_equal(IndexedDataset(f"{decomposed}_text_document").document(0),
                          IndexedDataset(f"{composed}_text_document").document(0))
