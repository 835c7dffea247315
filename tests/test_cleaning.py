"""Cleaning: the quality rules (Korean and German defaults, each switched off or tuned), exact and
near duplicates over the whole corpus, shards that equal one process, byte-identical reruns, the report."""

from __future__ import annotations

import dataclasses
import io
import json
import random
import shutil
import signal
import subprocess
import sys
import time

import pytest
import zstandard

from pretrain.corpus.cleaning import rules
from pretrain.corpus.cleaning.dedup import NearDupSettings, Signer, band_hashes, near_duplicates
from tests import corpus_samples
from tests.conftest import ROOT, demo_documents, grown_documents, run_tool, write_jsonl

KOREAN = next(d for d in demo_documents() if d.startswith("서울의 지하철"))
KOREAN_2 = next(d for d in demo_documents() if d.startswith("봄이 오면"))
GERMAN = next(d for d in demo_documents() if d.startswith("Im Herbst"))


def read_parts(folder) -> list[dict]:
    records = []
    for part in sorted(folder.glob("part-*.jsonl.zst")):
        with open(part, "rb") as handle:
            for line in io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(handle)):
                records.append(json.loads(line))
    return records


def clean(tmp_path, name, *args):
    out = tmp_path / name
    proc = run_tool("clean_corpus", "--output", out, "--workers", "2", "--no-progress", *args)
    return out, proc


# ----------------------------------------------------------------------------------------- rules
def test_each_rule_drops_what_it_should_and_can_be_switched_off_or_tuned():
    ko, de = rules.rules_for("ko"), rules.rules_for("de")
    assert rules.judge(KOREAN, ko).rule is None
    assert rules.judge(GERMAN, de).rule is None
    assert rules.judge("짧은 글입니다.", ko).rule == "length"
    assert rules.judge(GERMAN, ko).rule == "script"  # German under the Korean rules
    assert rules.judge(KOREAN + KOREAN[::-1], de).rule == "script"
    assert rules.judge(KOREAN + "\n" + KOREAN, ko).rule == "repetition"  # the same paragraph twice
    repeated = "\n".join(["같은 줄이 계속 반복됩니다 여러 번."] * 12 + [KOREAN])
    assert rules.judge(repeated, ko).rule == "repetition"
    assert rules.judge("Werbung Werbung Werbung " * 40, de).rule == "repetition"
    noisy = "\n".join(["로그인", KOREAN, "회원가입", KOREAN_2, "Copyright © 2024 All rights reserved"])
    verdict = rules.judge(noisy, ko)
    assert verdict.rule is None and verdict.removed_lines == ["로그인", "회원가입", "Copyright © 2024 All rights reserved"]
    assert verdict.text == KOREAN + "\n" + KOREAN_2
    assert rules.judge("짧은 글입니다.", rules.rules_for("ko", disabled=["length"])).rule is None
    assert rules.judge(KOREAN, rules.rules_for("ko", settings=["min_chars=1000"])).rule == "length"
    with pytest.raises(ValueError, match="--disable 'lenght' is not a rule.*--set 'min_char=5'"):
        rules.rules_for("ko", disabled=["lenght"], settings=["min_char=5"])
    assert rules.detect_language(KOREAN) == "ko" and rules.detect_language(GERMAN) == "de"


def documents_to_compare() -> list[str]:
    """Real documents (the shared corpora where present, the demo's grown ones) and made ones: words drawn
    from small vocabularies (every kind of repetition), and characters at the edges of the script ranges,
    digits that are not letters (①, ²), marks, emoji, a lone surrogate and the last code point."""
    import zstandard as zstd

    from tests.conftest import CORPORA

    docs = grown_documents(count=600, seed=3)
    for path in sorted(CORPORA.glob("*.jsonl.zst")) if CORPORA.exists() else []:
        with zstd.open(path, "rt", encoding="utf-8") as handle:
            docs += [json.loads(line)["text"] for line, _ in zip(handle, range(700))]
    rng = random.Random(5)
    vocabulary = ["가", "나다", "der", "Haus", "a", "bb", "\n", "\n\n"]
    for size in range(1, len(vocabulary) + 1):
        docs += [" ".join(rng.choice(vocabulary[:size]) for _ in range(rng.randint(0, 400))) for _ in range(60)]
    edges = [0x41, 0xB2, 0xC4, 0x24F, 0x250, 0x300, 0x1DFF, 0x1E00, 0x1EFF, 0x1F00, 0x10FF, 0x1100, 0x11FF, 0x1200,
             0x2460, 0x312F, 0x3130, 0x3131, 0x318E, 0x318F, 0x3190, 0xABFF, 0xAC00, 0xD7A3, 0xD7A4, 0xD800, 0x1F600,
             0x10FFFF]
    for _ in range(300):
        points = rng.choices(edges, k=rng.randint(0, 60)) + [rng.randrange(0x110000) for _ in range(rng.randint(0, 20))]
        docs.append("".join(map(chr, points)))
    return docs


def test_the_rules_count_as_plain_python_does():
    """The script shares, the language guess and Gopher's n-gram limits (counted in numpy and over the
    repeated n-grams only) equal the plain character-by-character and every-n-gram counting
    (tests/cleaning_reference.py) on real and made documents."""
    from tests import cleaning_reference as reference

    ko = rules.rules_for("ko")
    limits = (ko.max_top_ngram_chars, ko.max_duplicate_ngram_chars)
    problems = 0
    for doc in documents_to_compare():
        assert rules.detect_language(doc) == reference.detect_language(doc), ascii(doc[:80])
        for language in ("ko", "de"):
            assert rules.script_share(doc, language) == reference.script_share(doc, language), ascii(doc[:80])
        expected = reference.ngram_problem(doc.split(), *limits)
        problems += expected is not None
        lines = dataclasses.replace(ko, max_duplicate_line_share=2.0, max_duplicate_line_chars=2.0,
                                    max_duplicate_paragraph_share=2.0, max_duplicate_paragraph_chars=2.0)
        assert rules.repetition_problem(doc, lines) == expected, ascii(doc[:80])
    assert problems > 250  # the made documents reach the limits (299 of them without ../shared)
    rng = random.Random(7)  # limits in any order, of any n (1 too), negative ones
    for doc in documents_to_compare()[-900:]:
        top, duplicate = ({n: rng.uniform(-0.1, 0.4) for n in rng.sample(range(1, 8), rng.randint(0, 4))} for _ in "td")
        tuned = dataclasses.replace(lines, max_top_ngram_chars=top, max_duplicate_ngram_chars=duplicate)
        assert rules.repetition_problem(doc, tuned) == reference.ngram_problem(doc.split(), top, duplicate), (top, duplicate)


def test_minhash_finds_edited_copies_and_keeps_distinct_documents():
    rng = random.Random(0)
    originals = grown_documents(count=300, seed=11)[44:]  # recombinations: related, but distinct, documents
    edits = []
    for doc in originals[:40]:
        words = doc.split()
        position = rng.randrange(len(words))
        words[position] = words[position] + "요"  # one word changed
        edits.append(" ".join(words) + " 끝.")
    corpus = originals + edits
    signer, settings = Signer(NearDupSettings()), NearDupSettings()
    import numpy as np

    signatures = np.stack([signer(doc) for doc in corpus])
    found = near_duplicates(band_hashes(signatures, settings).T, signatures, np.ones(len(corpus), bool), 0.8)
    assert found[len(originals):].mean() >= 0.9  # the edited copies
    assert found[: len(originals)].sum() <= 2  # distinct documents sharing sentences stay


# -------------------------------------------------------------------------------------- pipeline
@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """Grown documents with exact copies (one spread over a second file) and edited copies planted."""
    folder = tmp_path_factory.mktemp("planted")
    docs = grown_documents(count=600, seed=4)[44:]
    rng = random.Random(1)
    first = docs[:300] + [docs[i] for i in range(0, 40, 2)]  # exact copies inside the first file
    second = docs[300:] + [docs[i] for i in range(1, 40, 2)]  # exact copies of the first file's documents
    second += [docs[i].replace(".", "!", 1) + " 정말입니다." for i in range(100, 130)]  # edited copies
    rng.shuffle(second)
    return [write_jsonl(folder / "a.jsonl", first), write_jsonl(folder / "b.jsonl", second)], docs


def test_cleaning_removes_planted_duplicates_and_reports_them(tmp_path, planted):
    inputs, docs = planted
    out, proc = clean(tmp_path, "one", "--input", *inputs, "--disable", "length")
    report = json.loads((out / "report.json").read_text())
    kept = read_parts(out)
    texts = [r["text"] for r in kept]
    assert len(set(texts)) == len(texts)  # no exact duplicate left
    assert report["removed"]["exact"]["documents"] == 40
    assert report["removed"]["near"]["documents"] >= 27  # of the 30 edited copies
    assert report["input"]["documents"] == len(docs) + 40 + 30
    assert report["kept"]["documents"] == len(kept) and kept[0]["source"].endswith("a.jsonl") and kept[0]["position"] == 1
    markdown = (out / "report.md").read_text()
    assert "| exact |" in markdown and "### near" in markdown and "a copy of an earlier document" in markdown
    assert "kept" in proc.stdout and "report.md" in proc.stdout
    from pretrain.corpus.sources import resolve_inputs  # the output folder as a later step's --input: its parts

    parts = sorted(map(str, out.glob("part-*.jsonl.zst")))
    assert [f.path for f in resolve_inputs([str(out)])] == parts
    assert [f.path for f in resolve_inputs([str(out.parent)]) if f.path.startswith(str(out))] == parts  # its parent
    mine = tmp_path / "mine"  # a user's own report.json is text like any other file
    mine.mkdir()
    write_jsonl(mine / "report.json", ["a report"])
    assert [f.path for f in resolve_inputs([str(mine)])] == [str(mine / "report.json")]


def test_shards_and_reruns_give_identical_output(tmp_path, planted):
    inputs, _ = planted
    one, _ = clean(tmp_path, "one", "--input", *inputs)
    again, _ = clean(tmp_path, "again", "--input", *inputs)
    parts = sorted(p.name for p in one.glob("part-*"))
    assert parts == sorted(p.name for p in again.glob("part-*"))
    for name in parts + ["report.md"]:
        if name == "report.md":
            continue  # names its output folder
        assert (one / name).read_bytes() == (again / name).read_bytes()
    sharded = tmp_path / "sharded"
    for shard in range(3):
        run_tool("clean_corpus", "--input", *inputs, "--output", sharded, "--stage", "filter", "--shard-index",
                 str(shard), "--num-shards", "3", "--workers", "1", "--no-progress")
    missing = run_tool("clean_corpus", "--input", *inputs, "--output", tmp_path / "early", "--stage", "dedup",
                       "--num-shards", "3", "--no-progress", check=False)
    assert missing.returncode == 2 and "has not finished its filter stage" in missing.stderr
    run_tool("clean_corpus", "--input", *inputs, "--output", sharded, "--stage", "dedup", "--num-shards", "3",
             "--no-progress")
    assert read_parts(sharded) == read_parts(one)  # exact and near dedup across shards equal one process
    assert not (sharded / ".stage").exists()
    assert json.loads((sharded / "report.json").read_text())["removed"] == \
        json.loads((one / "report.json").read_text())["removed"]


def test_cleaning_reads_wiki_dumps_and_keeps_titles(tmp_path):
    dump = corpus_samples.write_wiki_dump(tmp_path, count=12, kind="multistream", pages_per_stream=3)
    out, _ = clean(tmp_path, "wiki", "--input", dump, "--language", "ko", "--disable", "near", "exact")
    kept = read_parts(out)
    assert [r["title"] for r in kept] == [f"베를린 {n}" for n in range(12)]
    assert all("[[" not in r["text"] and "{{" not in r["text"] for r in kept)
    report = json.loads((out / "report.json").read_text())
    assert report["disabled"] == ["exact", "near"] and report["removed"]["near"]["documents"] == 0


def test_bad_input_stops_with_the_file_named_or_is_skipped_and_counted(tmp_path):
    """A lone surrogate (JSON's \\ud800, which json.loads accepts and no hash or output file takes) is an error
    naming the line or, with --skip-bad-input, a skipped and counted record; a damaged parquet file is an error
    naming it either way, as in preprocessing."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps({"text": text}) + "\n" for text in (KOREAN, GERMAN, KOREAN + "\ud800", KOREAN_2)))
    stopped = run_tool("clean_corpus", "--input", path, "--output", tmp_path / "stopped", "--no-progress", check=False)
    assert stopped.returncode == 2 and f"{path}:3: unpaired surrogate" in stopped.stderr, stopped.stderr[-2000:]
    assert "Traceback" not in stopped.stderr
    out, proc = clean(tmp_path, "out", "--input", path, "--skip-bad-input")
    assert json.loads((out / "report.json").read_text())["skipped"] == {"unpaired surrogate": 1}
    assert "skipped 1 records: unpaired surrogate" in proc.stdout  # on the console too, not only in the report
    assert [r["position"] for r in read_parts(out)] == [1, 2, 4]
    pq.write_table(pa.table({"text": [KOREAN, GERMAN] * 50}), tmp_path / "t.parquet", row_group_size=20)
    damaged = tmp_path / "t.parquet"
    damaged.write_bytes(damaged.read_bytes()[:-100])
    refused = run_tool("clean_corpus", "--input", damaged, "--output", tmp_path / "pq", "--skip-bad-input",
                       "--no-progress", check=False)
    assert refused.returncode == 2 and f"{damaged}: the parquet file is damaged or truncated" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_existing_output_and_bad_settings_are_refused(tmp_path, planted):
    inputs, _ = planted
    clean(tmp_path, "once", "--input", inputs[0])
    again = run_tool("clean_corpus", "--input", inputs[0], "--output", tmp_path / "once", check=False)
    assert again.returncode == 2 and "--overwrite" in again.stderr
    # --overwrite replaces a cleaned corpus only once the new one is complete: a failed run keeps it (and a
    # temporary file a kill -9 left of its report is its own, not a file of the user's)
    (tmp_path / "once" / "report.json.tmp-4242").write_text("{")
    before = {p.name: p.read_bytes() for p in (tmp_path / "once").iterdir()}
    broken = tmp_path / "broken.jsonl"
    broken.write_text(inputs[0].read_text(encoding="utf-8") + '{"text": "cut off\n', encoding="utf-8")
    failed = run_tool("clean_corpus", "--input", broken, "--output", tmp_path / "once", "--overwrite", check=False)
    assert failed.returncode == 2 and f"{broken}:" in failed.stderr, failed.stderr[-2000:]
    assert {p.name: p.read_bytes() for p in (tmp_path / "once").iterdir()} == before
    # never a folder of the user's own files, or one holding the input: --overwrite would have deleted them
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("precious")
    shutil.copy(inputs[0], mine / "raw.jsonl")
    for source, message in ((inputs[0], "holds files this command did not write (notes.txt, raw.jsonl)"),
                            (mine / "raw.jsonl", f"holds the input {mine / 'raw.jsonl'}")):
        refused = run_tool("clean_corpus", "--input", source, "--output", mine, "--overwrite", check=False)
        assert refused.returncode == 2 and message in refused.stderr, refused.stderr[-2000:]
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt", "raw.jsonl"]
    bad = run_tool("clean_corpus", "--input", inputs[0], "--output", tmp_path / "x", "--set", "min_chars=lots",
                   check=False)
    assert bad.returncode == 2 and "'lots' is not a number" in bad.stderr and "Traceback" not in bad.stderr


def test_no_workers_or_no_part_size_is_refused(tmp_path):
    """--workers 0 (a traceback from the pool) and --part-mb 0 (a part per document): refused with the option."""
    corpus = write_jsonl(tmp_path / "c.jsonl", demo_documents()[:5])
    for option, value in (("--workers", "0"), ("--workers", "-2"), ("--part-mb", "0")):
        proc = run_tool("clean_corpus", "--input", corpus, "--output", tmp_path / "out", option, value, check=False)
        assert proc.returncode == 2 and f"error: {option} must be" in proc.stderr, proc.stderr[-2000:]
        assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


def test_a_run_that_reads_no_document_publishes_nothing(tmp_path):
    """Every record skipped as bad input (a wrong --json-keys under --skip-bad-input): no empty corpus with exit 0."""
    corpus = write_jsonl(tmp_path / "c.jsonl", demo_documents()[:5])
    proc = run_tool("clean_corpus", "--input", corpus, "--output", tmp_path / "out", "--json-keys", "body",
                    "--skip-bad-input", check=False)
    assert proc.returncode == 2 and "no document to clean: every record was skipped as bad input (5 missing key)" \
        in proc.stderr, proc.stderr[-2000:]
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_stop_signal_while_the_pool_starts_is_raised_once_it_has_started():
    """Ctrl-C in the middle of starting the workers (cleaning, preprocessing and the analyzer pool all start
    theirs through worker_pool): the pool starts whole, then the interrupt is raised and the pool terminated.
    Raised at once, it left a half-started worker reading an empty pipe (a traceback under "interrupted")."""
    import multiprocessing

    from pretrain.corpus.pool import worker_pool

    started = []

    class InterruptedContext:  # the spawn context, with Ctrl-C arriving while the pool starts
        def Pool(self, *args):
            # what Python does when SIGINT arrives: call the handler installed now (deterministic, where a real
            # signal's delivery and this process's handler at the time depend on the machine and earlier tests)
            signal.getsignal(signal.SIGINT)(signal.SIGINT, None)
            started.append(multiprocessing.get_context("spawn").Pool(*args))
            return started[-1]

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C's usual meaning
    try:
        with pytest.raises(KeyboardInterrupt):
            with worker_pool(InterruptedContext(), 1, print, ()):
                time.sleep(1)  # the noted signal is raised before the body runs: it never gets here whole
                pytest.fail("the body ran")
        assert started, "the interrupt cut the pool's start in half"
        for process in started[0]._pool:
            process.join(timeout=30)
            assert not process.is_alive()
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.mark.parametrize("stage", ["filter", "dedup"])
def test_an_interrupted_cleaning_publishes_nothing(tmp_path, stage):
    """SIGTERM (what Slurm and kill send) while the rules run, or while the parts are written: exit 130,
    no part and no report, and no temporary file left behind."""
    corpus = write_jsonl(tmp_path / "big.jsonl", grown_documents(count=20_000, seed=3))
    out = tmp_path / "out"
    args = ["--input", corpus, "--output", out, "--workers", "2", "--no-progress", "--part-mb", "0.2"]
    if stage == "dedup":  # the filter stage first, so that the interruption lands in the writing of the parts
        run_tool("clean_corpus", *args, "--stage", "filter")
        args += ["--stage", "dedup"]
    proc = subprocess.Popen([sys.executable, str(ROOT / "tools" / "clean_corpus.py"), *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    pattern = ".stage/*.tmp-*" if stage == "filter" else "part-*.tmp-*"
    deadline = time.time() + 120
    while not list(out.glob(pattern)) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and b"Traceback" not in err, err.decode()[-2000:]
    left = [p.name for p in out.rglob("*") if p.is_file()]
    assert not [name for name in left if name.startswith(("part-", "report")) or ".tmp-" in name], left


SCALE_POOLS = """
import sys
sys.path[:0] = [{root!r}, {benchmarks!r}]
from pathlib import Path
from scale_corpus import line_pools
print("\\n".join(line_pools(Path({corpora!r}))["de"]))
"""


def test_the_scale_benchmarks_corpus_is_the_same_in_every_process(tmp_path):
    """benchmarks/scale_corpus.py grows its corpus in later processes from the parts' generator state; its line
    pools must be in the same order in each, even for lines whose CRC-32 collide ("Zeile 29685295" and "Zeile
    32060020" do), whatever the process's hash seed. Otherwise a grown corpus's planted copies point at
    documents with other text (as a 5 GB run found: 68 "missed" exact copies)."""
    import os

    lines = ["Zeile 29685295", "Zeile 32060020", *(f"Satz {i}" for i in range(200))]
    with zstandard.open(tmp_path / "de.sample.jsonl.zst", "wt", encoding="utf-8") as handle:
        handle.write(json.dumps({"text": "\n".join(lines)}) + "\n")
    with zstandard.open(tmp_path / "ko.sample.jsonl.zst", "wt", encoding="utf-8") as handle:
        handle.write(json.dumps({"text": "한 줄"}) + "\n")
    script = SCALE_POOLS.format(root=str(ROOT), benchmarks=str(ROOT / "benchmarks"), corpora=str(tmp_path))
    orders = set()
    for seed in range(8):
        proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                              env={**os.environ, "PYTHONHASHSEED": str(seed)})
        assert proc.returncode == 0, proc.stderr[-2000:]
        orders.add(proc.stdout)
    assert len(orders) == 1 and sorted(orders.pop().split()) == sorted(" ".join(lines).split())
