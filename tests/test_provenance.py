"""Which tokenizer made a dataset (pretrain/data/provenance.py): a tokenizer trained again at the same size, with
the data preprocessed before, is refused by training, merging, pretrain-eval and inspection, where every check
on the ids passes."""

from __future__ import annotations

import json
import logging
import os
import shutil

import pytest

from pretrain.data.indexed import IndexedDataset, meta_path
from pretrain.data.provenance import mismatch, tokenizer_record
from tests.conftest import grown_documents, run_tool, write_jsonl


@pytest.fixture(scope="module")
def retrained(tmp_path_factory, tokenizer_dir):
    """``tokenizer_dir`` trained again, at its size, on other documents: the same number of ids, other tokens."""
    from pretrain.tokenization.training import TokenizerTrainingOptions, train_tokenizer

    folder = tmp_path_factory.mktemp("retrained")
    corpus = write_jsonl(folder / "other.jsonl", grown_documents(count=200, seed=7)[::-1])
    train_tokenizer(TokenizerTrainingOptions(kind="bpe", inputs=[str(corpus)], output=str(folder / "bpe"),
                                             vocab_size=1024))
    return folder / "bpe"


def _preprocess(prefix, corpus, tokenizer, *extra) -> str:
    run_tool("preprocess_data", "--input", corpus, "--output-prefix", prefix, "--tokenizer", tokenizer,
             "--append-eod", "--no-progress", *extra)
    return f"{prefix}_text_document"


def test_data_of_a_retrained_tokenizer_is_refused_where_the_ids_pass(tmp_path, tokenizer_dir, retrained, small_corpus):
    from pretrain.cli.train import preflight
    from pretrain.config import ConfigError, load_config
    from pretrain.tokenization import load_tokenizer

    old, new = load_tokenizer(tokenizer_dir), load_tokenizer(retrained)
    assert old.vocab_size == new.vocab_size and old.specials.eod == new.specials.eod  # what the id checks compare
    dataset = IndexedDataset(_preprocess(tmp_path / "d", small_corpus, tokenizer_dir))
    record = tokenizer_record(dataset)
    assert record is not None and record.vocab_size == old.vocab_size and record.source == str(tokenizer_dir)

    def train_on(tokenizer):
        config = load_config("tiny_clm", [f"data.tokenizer={tokenizer}", f"data.prefixes=[{dataset.prefix}]",
                                          f"run.dir={tmp_path / 'run'}"])
        preflight(config)

    train_on(tokenizer_dir)
    with pytest.raises(ConfigError) as refused:
        train_on(retrained)
    assert f"{dataset.prefix} was preprocessed with another tokenizer than data.tokenizer {retrained}" in \
        str(refused.value) and f"made with {tokenizer_dir}" in str(refused.value)

    shown = run_tool("inspect_dataset", dataset.prefix)
    assert f"tokenizer: {tokenizer_dir} ({old.vocab_size:,} tokens" in shown.stdout
    wrong = run_tool("inspect_dataset", dataset.prefix, "--document", "0", "--tokenizer", retrained, check=False)
    assert wrong.returncode == 2 and "another tokenizer" in wrong.stderr

    shutil.rmtree(tokenizer_dir.parent / "moved", ignore_errors=True)  # the same tokenizer elsewhere: the same data
    shutil.copytree(tokenizer_dir, tokenizer_dir.parent / "moved")
    train_on(tokenizer_dir.parent / "moved")


def test_merging_data_of_two_tokenizers_is_refused(tmp_path, tokenizer_dir, retrained, small_corpus):
    for i in range(2):  # shards of one run: their record goes on to the merged dataset
        _preprocess(tmp_path / "s", small_corpus, tokenizer_dir, "--shard-index", str(i), "--num-shards", "2")
    run_tool("merge_datasets", "--input", tmp_path / "s_text_document")
    merged = IndexedDataset(tmp_path / "s_text_document")
    assert tokenizer_record(merged) == tokenizer_record(IndexedDataset(tmp_path / "s_text_document.shard-00000-of-00002"))

    other = IndexedDataset(_preprocess(tmp_path / "o", small_corpus, retrained))
    refused = run_tool("merge_datasets", "--input", merged.prefix, other.prefix, "--output-prefix", tmp_path / "m",
                       check=False)
    assert refused.returncode == 2 and "were preprocessed with different tokenizers" in refused.stderr
    assert not (tmp_path / "m.idx").exists()

    # a dataset without a record (Megatron's) merges, and the result vouches for nothing
    os.remove(meta_path(other.prefix))
    run_tool("merge_datasets", "--input", merged.prefix, other.prefix, "--output-prefix", tmp_path / "m")
    assert not (tmp_path / "m.meta.json").exists()


def test_a_record_that_describes_other_data_is_not_trusted(tmp_path, tokenizer_dir, retrained, small_corpus, caplog):
    dataset = IndexedDataset(_preprocess(tmp_path / "d", small_corpus, tokenizer_dir))
    body = json.loads((tmp_path / "d_text_document.meta.json").read_text())
    _preprocess(tmp_path / "d", small_corpus, retrained, "--overwrite")  # the record is written again with the data
    assert tokenizer_record(IndexedDataset(dataset.prefix)).source == str(retrained)
    (tmp_path / "d_text_document.meta.json").write_text(json.dumps({**body, "documents": body["documents"] + 1}))
    with caplog.at_level(logging.WARNING):
        assert tokenizer_record(IndexedDataset(dataset.prefix)) is None
    assert "describes another dataset" in caplog.text


def test_loads_of_one_tokenizer_with_other_special_tokens_are_the_same_tokenizer(tmp_path, llama3_style_tokenizer,
                                                                                  small_corpus, tokenizer_dir):
    """A released tokenizer without [MASK] and the rest: preprocessing loads it with an end of document only, an
    MLM run adds its roles past the end and saves it so (RUN_DIR/tokenizer, the export). Data made with either
    trains with either and merges (the record kept is the larger load); a smaller tokenizer trained again, whose
    ids all fall within the data's, is refused all the same."""
    from pretrain.data.provenance import BLOCK
    from pretrain.tokenization import load_tokenizer
    from pretrain.tokenization.specials import ROLES
    from pretrain.tokenization.training import TokenizerTrainingOptions, train_tokenizer

    release, saved = load_tokenizer(llama3_style_tokenizer), load_tokenizer(llama3_style_tokenizer, ROLES)
    assert saved.vocab_size > release.vocab_size and saved.vocab_size % BLOCK  # roles added, a partial last block
    saved.save(tmp_path / "run_tokenizer")
    by_release = IndexedDataset(_preprocess(tmp_path / "a", small_corpus, llama3_style_tokenizer))
    by_saved = IndexedDataset(_preprocess(tmp_path / "b", small_corpus, tmp_path / "run_tokenizer"))
    for dataset in (by_release, by_saved):
        for tokenizer in (release, saved):
            assert mismatch(dataset, tokenizer.backend, tokenizer.source, "data.tokenizer") is None
    run_tool("merge_datasets", "--input", by_release.prefix, by_saved.prefix, "--output-prefix", tmp_path / "m")
    assert tokenizer_record(IndexedDataset(tmp_path / "m")).vocab_size == saved.vocab_size

    corpus = write_jsonl(tmp_path / "other.jsonl", grown_documents(count=200, seed=11)[::-1])
    train_tokenizer(TokenizerTrainingOptions(kind="bpe", inputs=[str(corpus)], output=str(tmp_path / "small"),
                                             vocab_size=700))
    smaller = load_tokenizer(tmp_path / "small")
    made_by_a = IndexedDataset(_preprocess(tmp_path / "c", small_corpus, tokenizer_dir))
    assert smaller.vocab_size < tokenizer_record(made_by_a).vocab_size
    assert "another tokenizer" in mismatch(made_by_a, smaller.backend, smaller.source, "data.tokenizer")


def test_tokenizers_that_differ_only_in_their_added_tokens_are_told_apart(tmp_path, tokenizer_dir, small_corpus):
    """Chat or domain tokens added to one base tokenizer, other ones in each copy: the ids past the last whole
    256-id block are compared token by token, so the datasets neither merge nor train with the other copy."""
    import shutil

    from tokenizers import Tokenizer

    from pretrain.tokenization import load_tokenizer

    copies = {}
    for name, added in (("chatml", ["<|im_start|>", "<|im_end|>"]), ("roles", ["<|user|>", "<|assistant|>", "<|x|>"])):
        folder = tmp_path / name
        shutil.copytree(tokenizer_dir, folder)
        backend = Tokenizer.from_file(str(folder / "tokenizer.json"))
        backend.add_special_tokens(added)
        backend.save(str(folder / "tokenizer.json"))
        copies[name] = folder
    chatml, roles = (load_tokenizer(copies[name]) for name in ("chatml", "roles"))
    assert chatml.vocab_size < roles.vocab_size and chatml.vocab_size // 256 == roles.vocab_size // 256
    a = IndexedDataset(_preprocess(tmp_path / "a", small_corpus, copies["chatml"]))
    b = IndexedDataset(_preprocess(tmp_path / "b", small_corpus, copies["roles"]))
    assert "another tokenizer" in mismatch(b, chatml.backend, chatml.source, "data.tokenizer")
    assert "another tokenizer" in mismatch(a, roles.backend, roles.source, "data.tokenizer")
    refused = run_tool("merge_datasets", "--input", a.prefix, b.prefix, "--output-prefix", tmp_path / "m", check=False)
    assert refused.returncode == 2 and "different tokenizers" in refused.stderr
