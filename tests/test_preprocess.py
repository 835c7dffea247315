"""preprocess_data end to end on Korean and German text (the corpus grown from the demo, and the real
corpora where ../shared is present): exact ids, shards, bad input, kills."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest

from pretrain.data import indexed
from pretrain.data.indexed import IndexedDataset
from tests.conftest import ROOT, grown_documents, read_documents, run_tool, write_jsonl


def preprocess(tmp_path, *args, name="out", tokenizer=None, check=True):
    prefix = tmp_path / name
    proc = run_tool("preprocess_data", "--output-prefix", prefix, "--tokenizer", tokenizer, "--no-progress", *args,
                    check=check)
    return prefix, proc


@pytest.fixture(params=["grown", "real"])
def corpus_and_tokenizer(request, tmp_path_factory):
    """(input files, their documents, a GPT-2-layout tokenizer folder): the grown corpus with this project's
    BPE, and the real ko/de corpora with the shared multilingual BPE where ../shared is present."""
    if request.param == "grown":
        corpus = request.getfixturevalue("small_corpus")
        return [corpus], [json.loads(line)["text"] for line in corpus.open(encoding="utf-8")], \
            request.getfixturevalue("tokenizer_dir")
    files = request.getfixturevalue("corpus_files")
    chosen = [files["ko.debian-faq-ko"], files["de.fortunes-de"]]
    return chosen, [d for f in chosen for d in read_documents(f)], request.getfixturevalue("shared_bpe")


def test_ids_equal_the_tokenizers_own_encoding(tmp_path, corpus_and_tokenizer):
    from transformers import GPT2Tokenizer

    from pretrain.tokenization import load_tokenizer

    files, docs, tokenizer = corpus_and_tokenizer
    prefix, proc = preprocess(tmp_path, "--input", *files, "--append-eod", "--workers", "2", "--chunk-mb", "0.01",
                              tokenizer=tokenizer)
    ds = IndexedDataset(f"{prefix}_text_document")
    assert ds.num_documents == len(docs) == ds.num_sequences
    reference = GPT2Tokenizer.from_pretrained(str(tokenizer))  # transformers' own reading of vocab.json + merges.txt
    eod = load_tokenizer(tokenizer).specials.eod
    for k in list(range(0, len(docs), 97)) + [0, 1, len(docs) - 1]:
        assert ds.document(k).tolist() == reference(docs[k])["input_ids"] + [eod], k
    assert ds.dtype == np.uint16
    assert f"{len(docs):,} documents" in proc.stdout and "MB/s" in proc.stdout


def test_a_llama_tokenizers_documents_start_with_its_bos(tmp_path, llama3_style_tokenizer, small_corpus, caplog):
    """With a tokenizer whose own encoding puts a BOS first (Llama 3's layout), --append-eod gives each document
    as transformers encodes the text for a causal LM (Megatron-LM's HuggingFaceTokenizer too), then the
    end-of-text token: the BOS the released model was trained to see first is kept. Sentences: the BOS
    before a document's first only. Without --append-eod (masked LM data) nothing is added, and the trainer's
    data check warns where a causal LM's documents lack the BOS."""
    from transformers import AutoTokenizer

    from pretrain.config import DataConfig
    from pretrain.data.builder import check_datasets
    from pretrain.tokenization import load_tokenizer

    docs = [json.loads(line)["text"] for line in small_corpus.open(encoding="utf-8")]
    reference = AutoTokenizer.from_pretrained(str(llama3_style_tokenizer))
    tokenizer = load_tokenizer(llama3_style_tokenizer)
    bos, eod = reference.bos_token_id, reference.eos_token_id
    assert tokenizer.bos_id == bos and tokenizer.specials.eod == eod and reference("Hallo")["input_ids"][0] == bos
    prefix, proc = preprocess(tmp_path, "--input", small_corpus, "--append-eod", tokenizer=llama3_style_tokenizer)
    ds = IndexedDataset(f"{prefix}_text_document")
    assert ds.num_documents == len(docs)
    for k in [*range(0, len(docs), 41), len(docs) - 1]:
        assert ds.document(k).tolist() == reference(docs[k])["input_ids"] + [eod], k
    assert "each document starts with the tokenizer's BOS '<|begin_of_text|>'" in proc.stdout

    sentences, _ = preprocess(tmp_path, "--input", small_corpus, "--append-eod", "--split-sentences", name="s",
                              tokenizer=llama3_style_tokenizer)
    ds = IndexedDataset(f"{sentences}_text_sentence")
    for k in (0, 7, len(docs) - 1):
        starts = [int(ds[i][0]) for i in range(ds.document_indices[k], ds.document_indices[k + 1])]
        assert starts[0] == bos and bos not in starts[1:], k

    plain, proc = preprocess(tmp_path, "--input", small_corpus, name="plain", tokenizer=llama3_style_tokenizer)
    assert IndexedDataset(f"{plain}_text_document").document(0).tolist() == \
        reference(docs[0], add_special_tokens=False)["input_ids"]
    assert "BOS" not in proc.stdout

    without_bos = tmp_path / "without_bos"  # causal LM data as an earlier version wrote it: no BOS
    with indexed.IndexedDatasetWriter(str(without_bos), ds.dtype) as writer:
        ids = [reference(doc, add_special_tokens=False)["input_ids"] + [eod] for doc in docs[:50]]
        writer.add_documents(np.concatenate(ids), np.array([len(i) for i in ids]), np.ones(len(ids), np.int64))
        writer.finalize()
    for data_prefix, warned in ((without_bos, True), (f"{prefix}_text_document", False)):
        caplog.clear()
        data = DataConfig(tokenizer=str(llama3_style_tokenizer), prefixes=[str(data_prefix)])
        with caplog.at_level("WARNING"):
            assert check_datasets(data, tokenizer, "clm") == []
        assert ("documents do not start with the tokenizer's BOS '<|begin_of_text|>'" in caplog.text) == warned


def test_worker_count_and_chunk_size_do_not_change_the_output(tmp_path, tokenizer_dir, small_corpus):
    outputs = []
    for workers, chunk in (("1", "1"), ("2", "0.01"), ("3", "0.1")):
        prefix, _ = preprocess(tmp_path, "--input", small_corpus, "--workers", workers, "--chunk-mb", chunk,
                               name=f"w{workers}", tokenizer=tokenizer_dir)
        outputs.append([(tmp_path / f"w{workers}_text_document{s}").read_bytes() for s in (".bin", ".idx")])
    assert outputs[0] == outputs[1] == outputs[2]


def test_a_shard_without_documents_is_published_and_an_empty_merge_refused(tmp_path, tokenizer_dir):
    """A shard's byte range may hold only empty texts (the whole file's run has documents): it is published, as
    the merge needs every shard; a merge that finds no document at all is refused, as a single run is."""
    corpus = write_jsonl(tmp_path / "c.jsonl", [f"Satz Nummer {i}." for i in range(50)] + [""] * 3000)
    for i in range(2):
        preprocess(tmp_path, "--input", corpus, "--shard-index", str(i), "--num-shards", "2", name="s",
                   tokenizer=tokenizer_dir)
    assert IndexedDataset(tmp_path / "s_text_document.shard-00001-of-00002").num_documents == 0
    run_tool("merge_datasets", "--input", tmp_path / "s_text_document")
    assert IndexedDataset(tmp_path / "s_text_document").num_documents == 50
    refused = run_tool("merge_datasets", "--input", tmp_path / "s_text_document.shard-00001-of-00002",
                       "--output-prefix", tmp_path / "empty", check=False)
    assert refused.returncode == 2 and "hold no document" in refused.stderr


def test_shards_merged_equal_a_single_run(tmp_path, tokenizer_dir, small_corpus):
    import zstandard

    compressed = tmp_path / "whole.jsonl.zst"  # a compressed file goes whole to one shard
    compressed.write_bytes(zstandard.ZstdCompressor().compress(small_corpus.read_bytes()))
    copy = tmp_path / "copy.jsonl"  # a copy: the same file given twice is refused
    copy.write_bytes(small_corpus.read_bytes())
    inputs = [small_corpus, compressed, copy]
    single, _ = preprocess(tmp_path, "--input", *inputs, "--append-eod", name="single", tokenizer=tokenizer_dir)
    shards = 5
    for i in range(shards):
        preprocess(tmp_path, "--input", *inputs, "--append-eod", "--shard-index", str(i), "--num-shards", str(shards),
                   "--workers", "1", name="sharded", tokenizer=tokenizer_dir)
    names = sorted(p.name for p in tmp_path.glob("sharded_text_document.shard-*.idx"))
    assert names[0] == "sharded_text_document.shard-00000-of-00005.idx" and len(names) == shards
    out = run_tool("merge_datasets", "--input", tmp_path / "sharded_text_document")
    assert "merged 5 datasets" in out.stdout
    for suffix in (".bin", ".idx", ".meta.json"):  # the record of the tokenizer as well
        merged = (tmp_path / f"sharded_text_document{suffix}").read_bytes()
        assert merged == (tmp_path / f"single_text_document{suffix}").read_bytes()
    (tmp_path / "sharded_text_document.shard-00003-of-00005.idx").unlink()
    missing = run_tool("merge_datasets", "--input", tmp_path / "sharded_text_document", "--output-prefix",
                       tmp_path / "again", check=False)
    assert missing.returncode == 2 and "shard-00003-of-00005.idx" in missing.stderr and "rerun" in missing.stderr


def test_the_same_data_named_twice_is_refused(tmp_path, tokenizer_dir, small_corpus):
    """A file or a --json-keys key given twice would make each record two documents: refused, nothing written."""
    _, twice = preprocess(tmp_path, "--input", small_corpus, str(small_corpus).replace("/", "//"),
                          tokenizer=tokenizer_dir, check=False)
    assert twice.returncode == 2 and "would be read twice" in twice.stderr and "Traceback" not in twice.stderr
    _, keys = preprocess(tmp_path, "--input", small_corpus, "--json-keys", "text", "text", tokenizer=tokenizer_dir,
                         check=False)
    assert keys.returncode == 2 and "--json-keys names 'text' more than once" in keys.stderr
    assert not list(tmp_path.glob("out*"))


def test_merging_a_dataset_twice_is_refused(tmp_path):
    """A dataset named twice, or a folder merged into a prefix inside it and merged again with --overwrite (which
    took the earlier result in as an input): refused, the earlier output kept."""
    folder = tmp_path / "parts"
    folder.mkdir()
    for name, docs in (("a", [[[1, 2]], [[3]]]), ("b", [[[4, 5, 6]]])):
        with indexed.IndexedDatasetWriter(folder / name, np.uint16) as writer:
            for doc in docs:
                writer.add_document(doc)
            writer.finalize()
    twice = run_tool("merge_datasets", "--input", folder / "a", f"{folder}/./a.idx", "--output-prefix", tmp_path / "m",
                     check=False)
    assert twice.returncode == 2 and f"names the dataset {folder}/./a twice" in twice.stderr, twice.stderr
    assert not list(tmp_path.glob("m.*"))
    run_tool("merge_datasets", "--input", folder, "--output-prefix", folder / "all")
    again = run_tool("merge_datasets", "--input", folder, "--output-prefix", folder / "all", "--overwrite", check=False)
    assert again.returncode == 2 and f"the output {folder / 'all'} is one of the inputs" in again.stderr, again.stderr
    assert IndexedDataset(folder / "all").num_documents == 3


def test_megatron_core_reads_sentence_datasets(tmp_path, corpus_and_tokenizer):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from megatron.core.datasets.indexed_dataset import IndexedDataset as MegatronIndexedDataset
    from pretrain.data.sentences import split_sentences
    from pretrain.tokenization import load_tokenizer

    files, docs, tokenizer = corpus_and_tokenizer
    source, docs = files[0], docs[: len(read_jsonl_or_zst(files[0]))]
    prefix, _ = preprocess(tmp_path, "--input", source, "--split-sentences", "--json-keys", "text", tokenizer=tokenizer)
    ds = IndexedDataset(f"{prefix}_text_sentence")
    theirs = MegatronIndexedDataset(f"{prefix}_text_sentence")
    assert ds.num_documents == len(docs) and ds.num_sequences > 3 * len(docs)
    assert list(theirs.document_indices) == list(ds.document_indices)
    tok = load_tokenizer(tokenizer)
    first = split_sentences(docs[0])
    assert [ds[s].tolist() for s in ds.document_sequences(0)] == tok.encode(first)
    assert [theirs[s].tolist() for s in ds.document_sequences(0)] == tok.encode(first)


def read_jsonl_or_zst(path) -> list[str]:
    if str(path).endswith(".zst"):
        return read_documents(path)
    return [json.loads(line)["text"] for line in open(path, encoding="utf-8")]


def test_text_and_parquet_inputs(tmp_path, tokenizer_dir):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "a.txt").write_text("Erster Absatz,\nnoch Zeile.\n\n둘째 문서입니다.\n", encoding="utf-8")
    prefix, _ = preprocess(tmp_path, "--input", tmp_path / "a.txt", "--text-mode", "paragraph", tokenizer=tokenizer_dir)
    assert IndexedDataset(f"{prefix}_text_document").num_documents == 2
    pq.write_table(pa.Table.from_pylist([{"content": "Hallo Welt"}, {"content": "안녕"}]), tmp_path / "b.parquet")
    prefix, _ = preprocess(tmp_path, "--input", tmp_path / "b.parquet", "--json-keys", "content", name="pq",
                           tokenizer=tokenizer_dir)
    assert IndexedDataset(f"{prefix}_content_document").num_documents == 2


BAD_LINES = {
    "invalid JSON": b'{"text": "gut"}\n{"text": "kaputt\n{"text": "auch gut"}\n',
    "missing key": b'{"text": "gut"}\n{"body": "falscher Schl\xc3\xbcssel"}\n',
    "not UTF-8": b'{"text": "gut"}\n{"text": "\xc7\xd1\xb1\xb9\xbe\xee"}\n',  # cp949 Korean
    "not a string": b'{"text": "gut"}\n{"text": ["a", "list"]}\n',
    "unpaired surrogate": b'{"text": "gut"}\n{"text": "bad \\ud800 escape"}\n',
}


@pytest.mark.parametrize("reason", list(BAD_LINES))
def test_bad_records_stop_with_file_line_and_fix_or_are_counted(tmp_path, tokenizer_dir, reason):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(BAD_LINES[reason])
    prefix, proc = preprocess(tmp_path, "--input", path, tokenizer=tokenizer_dir, check=False)
    assert proc.returncode == 2, proc.stderr
    assert f"{path}:2: {reason}" in proc.stderr and "--skip-bad-input" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not list(tmp_path.glob("out*")), "nothing may be published after an error"
    prefix, proc = preprocess(tmp_path, "--input", path, "--skip-bad-input", tokenizer=tokenizer_dir)
    assert f"skipped 1 records: {reason}" in proc.stdout
    ds = IndexedDataset(f"{prefix}_text_document")
    assert ds.num_documents == BAD_LINES[reason].count(b"gut")


def test_a_run_that_keeps_no_document_publishes_nothing(tmp_path, tokenizer_dir):
    """Every record skipped (a key the records lack, under --skip-bad-input) or empty: exit 2 with the cause and the
    counts, never an empty dataset with exit 0."""
    path = write_jsonl(tmp_path / "t.jsonl", ["eins", "zwei", "drei"])
    _, proc = preprocess(tmp_path, "--input", path, "--json-keys", "body", "--skip-bad-input", tokenizer=tokenizer_dir,
                         check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "no document for --json-keys body (0 records read, 3 skipped as bad input" in proc.stderr
    assert "3 for missing key" in proc.stderr and f"{path}:1" in proc.stderr
    empty = write_jsonl(tmp_path / "e.jsonl", ["", " "])
    _, proc = preprocess(tmp_path, "--input", empty, tokenizer=tokenizer_dir, check=False)
    assert proc.returncode == 2 and "(2 records read, 0 skipped as bad input, 2 empty)" in proc.stderr
    assert not list(tmp_path.glob("out*")), "nothing may be published without a document"


@pytest.mark.parametrize("chunk_mb", ["0", "-1"])
def test_a_chunk_size_below_one_byte_is_refused(tmp_path, tokenizer_dir, small_corpus, chunk_mb):
    """A work item of no bytes read nothing: an empty dataset with exit 0."""
    _, proc = preprocess(tmp_path, "--input", small_corpus, f"--chunk-mb={chunk_mb}", tokenizer=tokenizer_dir,
                         check=False)
    assert proc.returncode == 2 and "--chunk-mb must be more than 0" in proc.stderr, proc.stderr
    assert not list(tmp_path.glob("out*"))


def test_empty_documents_are_skipped_and_counted(tmp_path, tokenizer_dir):
    path = tmp_path / "e.jsonl"
    path.write_text('{"text": "a"}\n{"text": ""}\n{"text": "  \\n "}\n\n{"text": "b"}\n')
    prefix, proc = preprocess(tmp_path, "--input", path, tokenizer=tokenizer_dir)
    assert "2 empty documents skipped" in proc.stdout
    assert IndexedDataset(f"{prefix}_text_document").num_documents == 2


def _codec(suffix: str):
    """(compress, a new decompressor object) of a file suffix."""
    import bz2
    import gzip
    import lzma
    import zlib

    import zstandard

    return {".gz": (gzip.compress, lambda: zlib.decompressobj(wbits=31)),
            ".bz2": (bz2.compress, bz2.BZ2Decompressor), ".xz": (lzma.compress, lzma.LZMADecompressor),
            ".zst": (zstandard.ZstdCompressor().compress, zstandard.ZstdDecompressor().decompressobj)}[suffix]


@pytest.mark.parametrize("suffix", [".gz", ".bz2", ".xz", ".zst"])
def test_truncated_compressed_file(tmp_path, tokenizer_dir, suffix):
    """Every complete record before the damage is kept and the error names the last one: as many as the codec's
    own decompressor finds, given every byte at once (two streams, cut inside the second)."""
    compress, decompressor = _codec(suffix)
    rows = [json.dumps({"text": f"Dokument Nummer {i} {i * 7919 % 10007}"}) + "\n" for i in range(80000)]
    blob = compress("".join(rows[:30000]).encode()) + compress("".join(rows[30000:]).encode())
    cut = blob[: len(blob) * 3 // 4]
    decoded, rest = b"", cut
    while rest:
        stream = decompressor()
        decoded += stream.decompress(rest)
        rest = stream.unused_data if stream.eof else b""
    complete = decoded.count(b"\n")
    assert 30000 < complete < 80000
    path = tmp_path / f"cut.jsonl{suffix}"
    path.write_bytes(cut)
    prefix, proc = preprocess(tmp_path, "--input", path, tokenizer=tokenizer_dir, check=False)
    assert proc.returncode == 2 and f"ends early after line {complete} (" in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    prefix, proc = preprocess(tmp_path, "--input", path, "--skip-bad-input", tokenizer=tokenizer_dir)
    assert f"truncated (kept its complete records): {path}" in proc.stdout
    assert IndexedDataset(f"{prefix}_text_document").num_documents == complete


def _damage(tmp_path, kind: str):
    """(what to pass as --input, the file the error must name) for a damaged table of ``kind``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"text": [f"Zeile {i}: 안녕하세요, Welt" for i in range(3000)]})
    if kind.endswith("parquet"):
        path = tmp_path / "t.parquet"
        pq.write_table(table, path, row_group_size=1000)
        data = bytearray(path.read_bytes())
        if kind == "cut parquet":
            del data[len(data) // 2:]
        else:  # a page in the middle overwritten: its footer still reads
            data[len(data) // 2: len(data) // 2 + 64] = bytes(range(64))
        path.write_bytes(bytes(data))
        return path, path
    folder = tmp_path / "ds"  # as datasets.Dataset.save_to_disk writes it
    folder.mkdir()
    path = folder / "data-00000-of-00001.arrow"
    with pa.ipc.new_stream(str(path), table.schema) as writer:
        for batch in table.to_batches(max_chunksize=1000):
            writer.write_batch(batch)
    (folder / "state.json").write_text(json.dumps({"_data_files": [{"filename": path.name}]}))
    if kind == "cut datasets folder":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        return folder, path
    path.unlink()
    return folder, folder


@pytest.mark.parametrize("kind", ["cut parquet", "cut datasets folder", "datasets folder less a file"])
def test_a_damaged_table_is_named_not_a_traceback(tmp_path, tokenizer_dir, kind):
    """pyarrow's errors from deep inside are bad input that names the file; a table that cannot be opened at all
    stops the run even with --skip-bad-input (no row of it can be read)."""
    given, named = _damage(tmp_path, kind)
    _, proc = preprocess(tmp_path, "--input", given, "--skip-bad-input", tokenizer=tokenizer_dir, check=False)
    assert proc.returncode == 2 and f"error: {named}" in proc.stderr, proc.stderr[-2000:]
    assert ("damaged or truncated" if "cut" in kind else "is missing") in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_damaged_row_group_stops_the_run_or_is_left_out_and_said(tmp_path, tokenizer_dir):
    """A page in the middle of a parquet file overwritten (its footer reads): the run stops naming the file and its
    rows; with --skip-bad-input the other row groups are kept, and the summary says which rows were left out."""
    given, _ = _damage(tmp_path, "damaged parquet")  # 3 row groups of 1,000 rows, the middle one damaged
    _, proc = preprocess(tmp_path, "--input", given, tokenizer=tokenizer_dir, check=False)
    assert proc.returncode == 2 and f"error: {given}: the parquet file is damaged or truncated (rows 1,001-2,000" in \
        proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    prefix, proc = preprocess(tmp_path, "--input", given, "--skip-bad-input", tokenizer=tokenizer_dir)
    assert f"truncated (kept its complete records): {given}, rows 1,001-2,000 left out" in proc.stdout, proc.stdout
    kept = IndexedDataset(f"{prefix}_text_document")
    assert kept.num_documents == 2000


def test_existing_output_and_bad_tokenizer(tmp_path, tokenizer_dir, small_corpus):
    preprocess(tmp_path, "--input", small_corpus, tokenizer=tokenizer_dir)
    _, again = preprocess(tmp_path, "--input", small_corpus, tokenizer=tokenizer_dir, check=False)
    assert again.returncode == 2 and "already exist" in again.stderr and "--overwrite" in again.stderr
    preprocess(tmp_path, "--input", small_corpus, "--overwrite", tokenizer=tokenizer_dir)
    (tmp_path / "empty").mkdir()
    _, bad = preprocess(tmp_path, "--input", small_corpus, name="x", tokenizer=tmp_path / "empty", check=False)
    assert bad.returncode == 2 and "is not a tokenizer folder" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.parametrize("tool", ["preprocess_data", "clean_corpus", "train_tokenizer", "merge_datasets"])
def test_an_output_under_a_file_is_named_without_a_traceback(tmp_path, tokenizer_dir, small_corpus, tool):
    """A regular file where the output's folder must be: one line naming the file in the way, exit 2."""
    (tmp_path / "afile").write_text("not a folder")
    out = tmp_path / "afile" / "sub"
    with indexed.IndexedDatasetWriter(tmp_path / "d", np.uint16) as writer:  # for merge_datasets to read
        writer.add_document([[1, 2, 3]])
        writer.finalize()
    args = {"preprocess_data": ["--input", small_corpus, "--tokenizer", tokenizer_dir, "--output-prefix", out / "p"],
            "clean_corpus": ["--input", small_corpus, "--output", out / "c", "--workers", "1"],
            "train_tokenizer": ["--input", small_corpus, "--output", out / "t", "--vocab-size", "300"],
            "merge_datasets": ["--input", tmp_path / "d", "--output-prefix", out / "m"]}[tool]
    proc = run_tool(tool, *args, check=False)
    assert proc.returncode == 2, proc.stderr
    assert f"{tmp_path / 'afile'} is a file, not a folder" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("error, cause", [(errno.EROFS, "read-only"), (errno.EACCES, "permission denied"),
                                          (errno.EISDIR, "it is a folder")])
def test_an_output_that_cannot_be_written_is_named_without_a_traceback(tmp_path, capsys, monkeypatch, error, cause):
    """The other errors of an output location, raised as the OS raises them (root, as the suite may run, is never
    refused permission): the path, by its final name rather than the temporary one, and the cause; exit 2."""
    from pretrain.cli.runner import run

    def main():
        raise OSError(error, os.strerror(error), str(tmp_path / f"out.bin.tmp-{os.getpid()}"))

    monkeypatch.setattr(signal, "signal", lambda *args: None)  # keep pytest's own SIGTERM handling
    with pytest.raises(SystemExit) as exited:
        run(main)
    err = capsys.readouterr().err
    assert exited.value.code == 2, err
    assert err.startswith("error: cannot ") and f"{tmp_path / 'out.bin'}: " in err and cause in err
    assert ".tmp-" not in err and "Traceback" not in err


def test_a_document_too_large_to_encode_is_bad_input(tmp_path, tokenizer_dir):
    """One line of many MB (a dump's whole book, a concatenation gone wrong) takes ~300x its size in memory to
    encode: over --max-document-mb it is bad input, named by file and line, or skipped and counted."""
    corpus = write_jsonl(tmp_path / "c.jsonl", ["Ein kurzer Satz.", "가나다 " * 400_000, "Noch ein Satz."])
    _, refused = preprocess(tmp_path, "--input", corpus, "--max-document-mb", "1", tokenizer=tokenizer_dir,
                            check=False)
    assert refused.returncode == 2 and f"{corpus}:2: document too large: 4 MB of text" in refused.stderr
    assert "--max-document-mb 1" in refused.stderr and "Traceback" not in refused.stderr
    prefix, kept = preprocess(tmp_path, "--input", corpus, "--max-document-mb", "1", "--skip-bad-input",
                              tokenizer=tokenizer_dir)
    assert "skipped 1 records: document too large" in kept.stdout
    assert IndexedDataset(f"{prefix}_text_document").num_documents == 2


@pytest.fixture(scope="module")
def big_corpus(tmp_path_factory):
    """~20 MB of Korean and German text: long enough to kill a run in the middle."""
    return write_jsonl(tmp_path_factory.mktemp("big") / "big.jsonl", grown_documents(count=40_000, seed=1))


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
def test_interrupted_run_publishes_nothing(tmp_path, tokenizer_dir, big_corpus, sig):
    cmd = [sys.executable, str(ROOT / "tools" / "preprocess_data.py"), "--input", str(big_corpus), "--tokenizer",
           str(tokenizer_dir), "--output-prefix", str(tmp_path / "o"), "--workers", "2", "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                            preexec_fn=_like_a_terminal_job)
    deadline = time.time() + 60
    while not list(tmp_path.glob("o_text_document.bin.tmp-*")) and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(1.5)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    os.kill(proc.pid, sig)
    _, err = proc.communicate(timeout=60)
    published = [name for name in ("o_text_document.bin", "o_text_document.idx") if (tmp_path / name).exists()]
    assert not published, f"{published} published after {sig.name}; exit {proc.returncode}; {err.decode()[-2000:]}"
    if sig != signal.SIGKILL:  # a catchable signal also removes the temporary files
        assert proc.returncode == 130 and b"Traceback" not in err
        assert list(tmp_path.iterdir()) == []
    os.killpg(proc.pid, signal.SIGKILL) if _group_alive(proc.pid) else None
    if sig == signal.SIGKILL:  # what it left holds disk: the next run on that output names it
        left = sorted(p.name for p in tmp_path.glob("o_text_document.*.tmp-*"))
        assert left and all(p.endswith(f".tmp-{proc.pid}") for p in left)
        small = write_jsonl(tmp_path / "small.jsonl", ["Ein kurzer Satz.", "Noch einer."])
        _, again = preprocess(tmp_path, "--input", small, name="o", tokenizer=tokenizer_dir)
        assert f"{len(left)} temporary file(s) of an interrupted earlier run" in again.stderr, again.stderr
        assert str(tmp_path / left[0]) in again.stderr


def test_a_worker_killed_midway_ends_the_run_with_a_message(tmp_path, tokenizer_dir, big_corpus):
    """The out-of-memory killer (or kill -9) takes a worker: the pool starts another in its place and the lost
    chunk's result never comes. The run says so and ends (it waited forever), publishing nothing."""
    import psutil

    cmd = [sys.executable, str(ROOT / "tools" / "preprocess_data.py"), "--input", str(big_corpus), "--tokenizer",
           str(tokenizer_dir), "--output-prefix", str(tmp_path / "o"), "--workers", "2", "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.time() + 60
        while not list(tmp_path.glob("o_text_document.bin.tmp-*")) and time.time() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)
        workers = [c for c in psutil.Process(proc.pid).children() if "spawn_main" in " ".join(c.cmdline())]
        assert proc.poll() is None and len(workers) == 2, "the run ended before a worker could be killed"
        workers[0].kill()
        _, err = proc.communicate(timeout=60)
    finally:
        if _group_alive(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 2 and b"a worker process was killed by signal 9" in err, err.decode()[-2000:]
    assert b"Traceback" not in err and list(tmp_path.iterdir()) == []


def _like_a_terminal_job() -> None:
    """SIGINT at its default, as for a command run in a terminal: a suite started in the background
    by a shell without job control (``cmd &``) has SIGINT ignored, and children inherit that."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
