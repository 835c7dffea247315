"""The .bin/.idx format: round trip, Megatron compatibility both ways, and clear errors on damage."""

from __future__ import annotations

import errno
import os
import pickle
import warnings

import numpy as np
import pytest

from pretrain.data.indexed import (
    IndexedDataset,
    IndexedDatasetWriter,
    IndexFormatError,
    idx_path,
    token_dtype,
)


def write(prefix, documents, dtype=np.uint16):
    with IndexedDatasetWriter(prefix, dtype) as writer:
        for doc in documents:
            writer.add_document(doc)
        writer.finalize()
    return IndexedDataset(prefix)


DOCS = [[[1, 2, 3]], [[4], [5, 6]], [], [[7, 8, 9, 10]], [[]]]


def test_round_trip_documents_sequences_and_tokens(tmp_path):
    ds = write(tmp_path / "d", DOCS)
    assert ds.num_documents == 5 and ds.num_sequences == 5 and ds.num_tokens == 10
    assert ds.document(0).tolist() == [1, 2, 3]
    assert ds.document(1).tolist() == [4, 5, 6]
    assert [ds[s].tolist() for s in ds.document_sequences(1)] == [[4], [5, 6]]
    assert ds.document(2).tolist() == [] and ds.document(4).tolist() == []
    assert ds.get(3, offset=1, length=2).tolist() == [8, 9]
    assert ds.tokens(2, 6).tolist() == [3, 4, 5, 6]
    assert ds.document_lengths().tolist() == [3, 3, 0, 4, 0]
    view = ds.document(3)  # zero-copy: a read-only view into the mapped .bin
    assert not view.flags.owndata and not view.flags.writeable


def test_batched_add_equals_per_document_add(tmp_path):
    a = write(tmp_path / "a", DOCS)
    with IndexedDatasetWriter(tmp_path / "b", np.uint16) as writer:
        writer.add_documents(np.arange(1, 11), [3, 1, 2, 4, 0], [1, 2, 0, 1, 1])
        writer.finalize()
    assert (tmp_path / "a.idx").read_bytes() == (tmp_path / "b.idx").read_bytes()
    assert (tmp_path / "a.bin").read_bytes() == (tmp_path / "b.bin").read_bytes()
    assert a.num_tokens == 10


def test_empty_dataset(tmp_path):
    ds = write(tmp_path / "e", [])
    assert ds.num_documents == 0 and ds.num_tokens == 0


def test_token_dtype_follows_megatron_rule():
    assert token_dtype(50257) == np.uint16
    assert token_dtype(65499) == np.uint16
    assert token_dtype(65500) == np.int32


def test_pickle_reopens_instead_of_copying(tmp_path):
    ds = write(tmp_path / "p", DOCS)
    blob = pickle.dumps(ds)
    assert len(blob) < 500
    assert pickle.loads(blob).document(3).tolist() == [7, 8, 9, 10]


def test_unfinished_writer_publishes_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with IndexedDatasetWriter(tmp_path / "x", np.uint16) as writer:
            writer.add_document([[1, 2]])
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_a_dataset_written_meanwhile_by_another_run_is_not_replaced(tmp_path):
    """Two runs on one output prefix, neither with --overwrite: the one that ends last used to replace the
    other's dataset silently, each saying it succeeded."""
    from pretrain.corpus.types import InputError

    with IndexedDatasetWriter(tmp_path / "x", np.uint16) as late:
        late.add_document([[9, 9]])
        write(tmp_path / "other", DOCS)  # the other run (another process: its own temporary names) publishes first
        for suffix in (".bin", ".idx"):
            os.replace(tmp_path / f"other{suffix}", tmp_path / f"x{suffix}")
        with pytest.raises(InputError, match="appeared while this run was writing them"):
            late.finalize(replace=False)
    assert IndexedDataset(tmp_path / "x").num_documents == len(DOCS)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.bin", "x.idx"]
    with IndexedDatasetWriter(tmp_path / "x", np.uint16) as overwriting:  # --overwrite: replaced
        overwriting.add_document([[9, 9]])
        overwriting.finalize(replace=True)
    assert IndexedDataset(tmp_path / "x").num_documents == 1


def test_a_full_disk_leaves_no_temporary_file(tmp_path):
    """ENOSPC while the .bin is written: closing it flushes the buffer and fails again, and every temporary
    file still goes (that second error used to stop the cleanup before any file was removed)."""
    if not os.path.exists("/dev/full"):
        pytest.skip("needs /dev/full (every write to it fails with ENOSPC)")
    with pytest.raises(OSError) as raised:
        with IndexedDatasetWriter(tmp_path / "x", np.uint16) as writer:
            writer._bin.close()
            writer._bin = open("/dev/full", "wb", buffering=1 << 20)  # the .bin's disk is full; its temp file stays
            writer.add_document([[1, 2, 3]])  # buffered, not yet written
            writer.add_document([np.arange(1 << 20) % 1000])  # more than the buffer holds: the flush fails
            writer.finalize()
    assert raised.value.errno == errno.ENOSPC
    assert list(tmp_path.iterdir()) == []


def test_bad_files_say_what_is_wrong(tmp_path):
    prefix = tmp_path / "d"
    write(prefix, DOCS)
    with pytest.raises(IndexFormatError, match="does not exist"):
        IndexedDataset(tmp_path / "nope")
    raw = (tmp_path / "d.idx").read_bytes()
    (tmp_path / "d.idx").write_bytes(raw[:-8])
    with pytest.raises(IndexFormatError, match="truncated or damaged"):
        IndexedDataset(prefix)
    (tmp_path / "d.idx").write_bytes(b"TNTIDX\x00\x00" + raw[8:])
    with pytest.raises(IndexFormatError, match="not a Megatron-style"):
        IndexedDataset(prefix)
    (tmp_path / "d.idx").write_bytes(raw)
    (tmp_path / "d.bin").write_bytes((tmp_path / "d.bin").read_bytes()[:-2])
    with pytest.raises(IndexFormatError, match="truncated or belongs to another index"):
        IndexedDataset(prefix)
    (tmp_path / "d.idx").rename(idx_path(prefix) + ".tmp-123")
    with pytest.raises(IndexFormatError, match="was interrupted"):
        IndexedDataset(prefix)


@pytest.fixture(scope="module")
def megatron():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from megatron.core.datasets import indexed_dataset
    return indexed_dataset


@pytest.mark.parametrize("dtype", [np.uint16, np.int32])
def test_megatron_reads_what_we_write(tmp_path, megatron, dtype):
    write(tmp_path / "d", DOCS, dtype)
    theirs = megatron.IndexedDataset(str(tmp_path / "d"))
    ours = IndexedDataset(tmp_path / "d")
    assert len(theirs) == ours.num_sequences
    assert theirs.index.dtype == dtype
    assert list(theirs.document_indices) == list(ours.document_indices)
    for s in range(ours.num_sequences):
        assert theirs[s].tolist() == ours[s].tolist()


def test_we_read_what_megatron_writes(tmp_path, megatron):
    import torch

    builder = megatron.IndexedDatasetBuilder(str(tmp_path / "m.bin"), dtype=np.uint16)
    for doc in DOCS:
        for seq in doc:
            builder.add_item(torch.tensor(seq, dtype=torch.int64))
        builder.end_document()
    builder.finalize(str(tmp_path / "m.idx"))
    write(tmp_path / "o", DOCS)
    assert (tmp_path / "m.idx").read_bytes() == (tmp_path / "o.idx").read_bytes()
    assert (tmp_path / "m.bin").read_bytes() == (tmp_path / "o.bin").read_bytes()
    ours = IndexedDataset(tmp_path / "m")
    assert ours.document(1).tolist() == [4, 5, 6]


def test_interrupt_between_the_two_renames_publishes_neither(tmp_path, monkeypatch):
    """Ctrl-C after the .bin is renamed but before the .idx is: the .bin is taken back, and an
    older pair being overwritten never leaves its .idx beside the new .bin."""
    write(tmp_path / "d", DOCS)  # the older pair
    real_replace, calls = os.replace, []

    def replace_then_interrupt(source, target):
        calls.append(target)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", replace_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        write(tmp_path / "d", [[[1, 2]]])
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_inspect_decodes_a_document_and_names_ids_from_another_tokenizer(tmp_path, tokenizer_dir):
    """pretrain-inspect-dataset --tokenizer: a document decoded; ids beyond that tokenizer's vocabulary (data made
    with another one) are named instead of being dropped from the text without a word."""
    from pretrain.tokenization import load_tokenizer
    from tests.conftest import run_tool

    ids = load_tokenizer(tokenizer_dir).encode(["Guten Tag, 안녕하세요."])[0]
    write(tmp_path / "ours", [[ids]])
    shown = run_tool("inspect_dataset", tmp_path / "ours", "--document", "0", "--tokenizer", tokenizer_dir)
    assert "'Guten Tag, 안녕하세요.'" in shown.stdout
    write(tmp_path / "theirs", [[[70000, 5, 6]]], dtype=np.int32)
    refused = run_tool("inspect_dataset", tmp_path / "theirs", "--document", "0", "--tokenizer", tokenizer_dir,
                       check=False)
    assert refused.returncode == 2 and "holds id 70000, beyond the" in refused.stderr and "another tokenizer" in \
        refused.stderr


def test_a_merge_widens_uint16_ids_of_the_same_tokenizer_to_int32(tmp_path):
    """A tokenizer just under 65,500 ids writes uint16; its run's saved copy, with special tokens added past
    65,500, writes int32: their data merges into int32, every id kept (it was refused as two tokenizers')."""
    from pretrain.data.merge import merge_datasets

    narrow = write(tmp_path / "narrow", [[[1, 65499, 7]], [[2, 3]]], dtype=np.uint16)
    wide = write(tmp_path / "wide", [[[65502, 4]]], dtype=np.int32)
    merged = merge_datasets([narrow.prefix, wide.prefix], str(tmp_path / "merged"))
    assert merged.dtype == np.int32 and merged.num_documents == 3
    assert [merged.document(k).tolist() for k in range(3)] == [[1, 65499, 7], [2, 3], [65502, 4]]
