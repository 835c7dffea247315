"""Corpus readers: formats, compression, and shards that add up exactly to the whole input."""

from __future__ import annotations

import bz2
import gzip
import json
import lzma

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pretrain.corpus import records
from pretrain.corpus.parsing import parse_chunk
from pretrain.corpus.sources import plan_shard, read_chunks, resolve_inputs
from pretrain.corpus.types import InputError


def read_all(specs, shard=0, shards=1, mode="line", chunk=64, keys=("text",)):
    """(file, line, text) of every record of the inputs, for one shard."""
    out = []
    for file, start, end in plan_shard(resolve_inputs(specs), shard, shards):
        for c in read_chunks(file, start, end, mode, chunk, keys):
            parsed = parse_chunk(c, keys)
            assert not parsed.problems, parsed.problems
            out += [(file.path, line, text) for line, text in zip(parsed.lines, parsed.texts[keys[0]])]
    return out


LINE_TEXT = st.lists(st.text(alphabet="ab가 \t\r", max_size=12), max_size=25).map("\n".join)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=LINE_TEXT, shards=st.integers(1, 9), chunk=st.integers(1, 40), mode=st.sampled_from(["line", "paragraph"]),
       trailing=st.booleans())
def test_shards_concatenate_to_the_whole_file(tmp_path, body, shards, chunk, mode, trailing):
    path = tmp_path / "corpus.txt"
    path.write_bytes((body + ("\n" if trailing else "")).encode())
    whole = read_all([str(path)], mode=mode, chunk=1 << 20)
    parts = [r for i in range(shards) for r in read_all([str(path)], i, shards, mode, chunk)]
    assert parts == whole
    if mode == "line":
        assert [t for _, _, t in whole] == [ln.removesuffix("\r") for ln in body.split("\n") if ln.strip()]


def test_line_numbers_survive_sharding(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text("".join(json.dumps({"text": f"doc {i}"}) + "\n" for i in range(100)))
    records_ = [r for i in range(7) for r in read_all([str(path)], i, 7)]
    assert [line for _, line, _ in records_] == list(range(1, 101))
    assert [t for _, _, t in records_] == [f"doc {i}" for i in range(100)]


def test_paragraph_mode_joins_lines_until_a_blank_line(tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("Erster Absatz,\nzweite Zeile.\n\n  \n두 번째 문서.\n\n\nDritter.")
    got = read_all([str(path)], mode="paragraph")
    assert [(line, text) for _, line, text in got] == [
        (1, "Erster Absatz,\nzweite Zeile."), (5, "두 번째 문서."), (8, "Dritter.")]


@pytest.mark.parametrize("suffix,opener", [(".gz", gzip.open), (".bz2", bz2.open), (".xz", lzma.open), (".zst", None)])
def test_compressed_inputs_and_whole_file_sharding(tmp_path, suffix, opener):
    payload = "".join(json.dumps({"text": f"문서 {i} Straße"}, ensure_ascii=False) + "\n" for i in range(50)).encode()
    path = tmp_path / f"c.jsonl{suffix}"
    if opener is None:
        import zstandard

        path.write_bytes(zstandard.ZstdCompressor().compress(payload))
    else:
        with opener(path, "wb") as handle:
            handle.write(payload)
    plain = tmp_path / "p.jsonl"
    plain.write_bytes(payload)
    assert [t for *_, t in read_all([str(path)])] == [t for *_, t in read_all([str(plain)])]
    per_shard = [read_all([str(path), str(plain)], i, 3) for i in range(3)]
    assert sum(per_shard, []) == read_all([str(path), str(plain)])
    assert len(per_shard[0]) >= 50  # the compressed file went whole to the shard of its first byte


def test_parquet_and_datasets_folder(tmp_path):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"text": f"Satz {i}.", "title": f"T{i}"} for i in range(300)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet", row_group_size=40)
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "saved"), max_shard_size="2KB")
    for spec in (str(tmp_path / "d.parquet"), str(tmp_path / "saved")):
        whole = read_all([spec], keys=("text", "title"))
        assert [t for *_, t in whole] == [r["text"] for r in rows]
        assert [line for _, line, _ in whole][:3] == [1, 2, 3]
        assert sum((read_all([spec], i, 4, keys=("text",)) for i in range(4)), []) == read_all([spec])


def test_input_resolution_errors(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        resolve_inputs([str(tmp_path / "missing.jsonl")])
    with pytest.raises(InputError, match="matches no file"):
        resolve_inputs([str(tmp_path / "*.jsonl")])
    (tmp_path / "notes.md").write_text("x")
    with pytest.raises(InputError, match="--input-format"):
        resolve_inputs([str(tmp_path / "notes.md")])
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "dataset_dict.json").write_text("{}")
    (tmp_path / "d" / "train").mkdir()
    with pytest.raises(InputError, match="pass one split's folder"):
        resolve_inputs([str(tmp_path / "d")])


def test_a_file_named_twice_is_refused(tmp_path, monkeypatch):
    """The same file again (its name again, a glob or folder holding it, another spelling, a link) would be read
    twice without a word: refused, naming both specs."""
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "ko.jsonl").write_text('{"text": "안녕"}\n')
    (folder / "de.jsonl").write_text('{"text": "Hallo"}\n')
    monkeypatch.chdir(tmp_path)
    for specs in (["corpus/ko.jsonl", "corpus/k*.jsonl"], ["corpus/ko.jsonl", "./corpus/ko.jsonl"],
                  ["corpus", "corpus/ko.jsonl"], ["corpus/ko.jsonl", "corpus/ko.jsonl"]):
        with pytest.raises(InputError, match="would be read twice") as refused:
            resolve_inputs(specs)
        assert repr(specs[1]) in str(refused.value), str(refused.value)
    (folder / "link.jsonl").symlink_to("ko.jsonl")
    with pytest.raises(InputError, match="named already as corpus/ko.jsonl"):
        resolve_inputs(["corpus"])
    (folder / "link.jsonl").unlink()
    assert [f.path for f in resolve_inputs(["corpus/ko.jsonl", "corpus/de.jsonl"])] == ["corpus/ko.jsonl",
                                                                                      "corpus/de.jsonl"]


def test_boundaries_agree_between_neighbouring_shards():
    buf = b"one\n\n  \ntwo\nthree\n\nfour"
    for pos in range(len(buf) + 1):
        found = records.next_boundary(buf, pos, records.PARAGRAPH, True)
        assert found is None or found >= pos
        assert found in (None, 0, 5, 8, 19)


@pytest.mark.parametrize("mode", ["line", "paragraph"])
def test_shard_edges_inside_very_long_lines(tmp_path, mode):
    """Boundaries more than the 64 KiB search window away from a shard edge are still found."""
    lines = ["x" * 150_000, "", "y" * 200_000, "z" * 90_000, "", "", "w" * 10, "v" * 300_000]
    path = tmp_path / "long.txt"
    path.write_text("\n".join(lines))
    whole = read_all([str(path)], mode=mode, chunk=1 << 16)
    for shards in (2, 3, 7, 13):
        assert sum((read_all([str(path)], i, shards, mode, 1 << 16) for i in range(shards)), []) == whole


def test_a_file_system_without_inode_numbers_names_files_by_their_resolved_path(tmp_path, monkeypatch):
    """Some file systems (FUSE mounts, some network shares) report inode 0 for every file: (device, 0) would make
    every input "the same file" and refuse them all; the resolved path tells them apart and still sees a link."""
    import os

    from pretrain.corpus.sources import file_identity

    one, two = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    one.write_text("{}\n")
    two.write_text("{}\n")
    (tmp_path / "link.jsonl").symlink_to(one)
    real_stat = os.stat

    def without_inodes(path, *args, **kwargs):
        result = real_stat(path, *args, **kwargs)
        return os.stat_result((result.st_mode, 0, *tuple(result)[2:]))

    monkeypatch.setattr(os, "stat", without_inodes)
    assert file_identity(str(one)) != file_identity(str(two))
    assert file_identity(str(tmp_path / "link.jsonl")) == file_identity(str(one)) == file_identity(f"{tmp_path}/./a.jsonl")
