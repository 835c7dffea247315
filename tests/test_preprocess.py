"""preprocess_data end to end on Korean and German text (the corpus grown from the demo, and the real
corpora where ../shared is present): exact ids, shards, bad input, kills."""

from __future__ import annotations

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


def test_shards_merged_equal_a_single_run(tmp_path, tokenizer_dir, small_corpus):
    import zstandard

    compressed = tmp_path / "whole.jsonl.zst"  # a compressed file goes whole to one shard
    compressed.write_bytes(zstandard.ZstdCompressor().compress(small_corpus.read_bytes()))
    inputs = [small_corpus, compressed, small_corpus]
    single, _ = preprocess(tmp_path, "--input", *inputs, "--append-eod", name="single", tokenizer=tokenizer_dir)
    shards = 5
    for i in range(shards):
        preprocess(tmp_path, "--input", *inputs, "--append-eod", "--shard-index", str(i), "--num-shards", str(shards),
                   "--workers", "1", name="sharded", tokenizer=tokenizer_dir)
    names = sorted(p.name for p in tmp_path.glob("sharded_text_document.shard-*.idx"))
    assert names[0] == "sharded_text_document.shard-00000-of-00005.idx" and len(names) == shards
    out = run_tool("merge_datasets", "--input", tmp_path / "sharded_text_document")
    assert "merged 5 datasets" in out.stdout
    for suffix in (".bin", ".idx"):
        merged = (tmp_path / f"sharded_text_document{suffix}").read_bytes()
        assert merged == (tmp_path / f"single_text_document{suffix}").read_bytes()
    (tmp_path / "sharded_text_document.shard-00003-of-00005.idx").unlink()
    missing = run_tool("merge_datasets", "--input", tmp_path / "sharded_text_document", "--output-prefix",
                       tmp_path / "again", check=False)
    assert missing.returncode == 2 and "shard-00003-of-00005.idx" in missing.stderr and "rerun" in missing.stderr


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


def test_empty_documents_are_skipped_and_counted(tmp_path, tokenizer_dir):
    path = tmp_path / "e.jsonl"
    path.write_text('{"text": "a"}\n{"text": ""}\n{"text": "  \\n "}\n\n{"text": "b"}\n')
    prefix, proc = preprocess(tmp_path, "--input", path, tokenizer=tokenizer_dir)
    assert "2 empty documents skipped" in proc.stdout
    assert IndexedDataset(f"{prefix}_text_document").num_documents == 2


def test_truncated_compressed_file(tmp_path, tokenizer_dir):
    import zstandard

    lines = "".join(json.dumps({"text": f"Dokument Nummer {i}"}) + "\n" for i in range(60000)).encode()
    blob = zstandard.ZstdCompressor().compress(lines)
    path = tmp_path / "cut.jsonl.zst"
    path.write_bytes(blob[: len(blob) // 2])
    prefix, proc = preprocess(tmp_path, "--input", path, tokenizer=tokenizer_dir, check=False)
    assert proc.returncode == 2 and "ends early after line" in proc.stderr and "Traceback" not in proc.stderr
    prefix, proc = preprocess(tmp_path, "--input", path, "--skip-bad-input", tokenizer=tokenizer_dir)
    assert f"truncated (kept its complete records): {path}" in proc.stdout
    kept = IndexedDataset(f"{prefix}_text_document").num_documents
    assert 20000 < kept < 40000


def test_existing_output_and_bad_tokenizer(tmp_path, tokenizer_dir, small_corpus):
    preprocess(tmp_path, "--input", small_corpus, tokenizer=tokenizer_dir)
    _, again = preprocess(tmp_path, "--input", small_corpus, tokenizer=tokenizer_dir, check=False)
    assert again.returncode == 2 and "already exist" in again.stderr and "--overwrite" in again.stderr
    preprocess(tmp_path, "--input", small_corpus, "--overwrite", tokenizer=tokenizer_dir)
    (tmp_path / "empty").mkdir()
    _, bad = preprocess(tmp_path, "--input", small_corpus, name="x", tokenizer=tmp_path / "empty", check=False)
    assert bad.returncode == 2 and "is not a tokenizer folder" in bad.stderr and "Traceback" not in bad.stderr


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
