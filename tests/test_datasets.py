"""Training datasets: packed CLM samples, MLM pairs and masking on real text, blending, sampling,
and the sample-index cache."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import time
from queue import Empty

import numpy as np
import pytest

from pretrain.data.blend import build_blend
from pretrain.data.gpt_dataset import GPTDataset, build_gpt_indices, epochs_needed, samples_per_epoch
from pretrain.data.index_cache import load_or_build
from pretrain.data.indexed import IndexedDataset, IndexedDatasetWriter
from pretrain.data.masking import IGNORE_INDEX, MaskingSpec, max_predictions
from pretrain.data.mlm_dataset import MLMDataset, build_mlm_indices
from pretrain.data.sampler import PretrainingBatchSampler
from tests.conftest import ROOT, run_tool


def make_dataset(tmp_path, docs, name="d"):
    with IndexedDatasetWriter(tmp_path / name, np.uint16) as writer:
        for doc in docs:
            writer.add_document(doc)
        writer.finalize()
    return IndexedDataset(tmp_path / name)


def test_gpt_samples_are_each_epochs_shuffled_stream_cut_every_seq_len(tmp_path):
    rng = np.random.default_rng(0)
    docs = [[list(rng.integers(1, 500, rng.integers(0, 40))) + [0]] for _ in range(60)]
    indexed = make_dataset(tmp_path, docs)
    lengths = indexed.document_lengths()
    seq_len, samples = 16, 300  # several epochs of ~1,300 tokens
    per_epoch = samples_per_epoch(int(lengths.sum()), seq_len)
    epochs = epochs_needed(int(lengths.sum()), samples, seq_len)
    indices = build_gpt_indices(lengths, 0, epochs, seq_len, seed=7)
    dataset = GPTDataset(indexed, indices, seq_len, samples)
    assert len(dataset) == samples and len(indices["shuffle_index"]) == epochs * per_epoch >= samples
    order = indices["document_index"].reshape(epochs, len(docs))
    streams = [np.concatenate([indexed.document(int(d)) for d in epoch]) for epoch in order]
    for i in range(samples):
        epoch, row = divmod(int(indices["shuffle_index"][i]), per_epoch + 1)
        assert dataset.tokens(i).tolist() == streams[epoch][row * seq_len : row * seq_len + seq_len + 1].tolist()
    for e in range(epochs):  # every epoch serves each of its samples once, in its own shuffled order
        block = indices["shuffle_index"][e * per_epoch : (e + 1) * per_epoch]
        assert sorted(block.tolist()) == list(range(e * (per_epoch + 1), e * (per_epoch + 1) + per_epoch))
        assert sorted(order[e].tolist()) == list(range(len(docs)))
    again = build_gpt_indices(lengths, 0, epochs, seq_len, seed=7)
    assert all(np.array_equal(indices[k], again[k]) for k in indices)
    # more epochs (a longer run) append samples without changing the earlier ones
    longer = build_gpt_indices(lengths, 0, epochs + 2, seq_len, seed=7)
    longer_dataset = GPTDataset(indexed, longer, seq_len, samples)
    assert all(np.array_equal(longer_dataset.tokens(i), dataset.tokens(i)) for i in range(samples))


def test_gpt_index_of_a_billion_tokens_builds_in_seconds():
    lengths = np.random.default_rng(1).integers(1, 1200, 2_000_000)
    started = time.perf_counter()
    indices = build_gpt_indices(lengths, 0, 1, 1024, seed=1)
    assert time.perf_counter() - started < 20  # ~0.2 s here; benchmarks/sample_index.py has the figures
    assert indices["sample_index"].shape == ((int(lengths.sum()) - 1) // 1024 + 1, 2)


def test_a_document_past_int32_gets_an_index_that_holds_its_offsets():
    """A row is (position in the document order, offset into that document): an offset inside a document
    of 2**31 tokens or more does not fit int32, whatever the document and row counts."""
    lengths = np.array([3 << 30, 1000, 2000], dtype=np.int64)
    seq_len = 1 << 24
    indices = build_gpt_indices(lengths, 0, 1, seq_len, seed=3)
    rows, order = indices["sample_index"], indices["document_index"]
    starts = np.concatenate([[0], np.cumsum(lengths[order])[:-1]])
    expected = [(int(k), position - int(starts[k])) for position in range(0, len(rows) * seq_len, seq_len)
                for k in [int(np.searchsorted(starts, position, side="right")) - 1]]
    assert [(int(a), int(b)) for a, b in rows] == expected


def test_blend_follows_weights_in_every_prefix():
    owner, within = build_blend([0.7, 0.2, 0.1], 10_000)
    for n in (10, 100, 1000, 10_000):
        counts = np.bincount(owner[:n], minlength=3)
        assert np.all(np.abs(counts - n * np.array([0.7, 0.2, 0.1])) <= 1.5)
    for d in range(3):  # each dataset's samples are taken in order, none twice
        assert np.array_equal(within[owner == d], np.arange((owner == d).sum()))


def test_sampler_resumes_without_replay_and_matches_any_world_size():
    def global_steps(world, consumed=0):
        per_rank = [list(PretrainingBatchSampler(96, consumed, 2, r, world)) for r in range(world)]
        flat = []
        for block in zip(*per_rank):
            for part in block:
                flat += part
        return flat

    assert global_steps(1) == global_steps(2) == global_steps(4) == list(range(96))
    assert global_steps(2, consumed=40) == list(range(40, 96))


def _build_in_child(cache_dir, builds, queue):
    """One rank: load the index, building it (slowly) if this rank wins; each build appends a line to
    ``builds`` (O_APPEND: the lines of concurrent builders never mix)."""
    def build():
        with open(builds, "a") as log:
            log.write(f"{os.getpid()}\n")
        time.sleep(1.0)
        return {"a": np.arange(10)}

    arrays = load_or_build(cache_dir, {"k": 1}, build, "test", may_build=True, wait_minutes=1)
    queue.put(int(arrays["a"].sum()))


def test_index_cache_is_built_once_while_others_wait(tmp_path):
    context = multiprocessing.get_context("fork")
    queue, builds, cache = context.Queue(), tmp_path / "builds.log", tmp_path / "cache"
    procs = [context.Process(target=_build_in_child, args=(cache, builds, queue)) for _ in range(4)]
    for p in procs:
        p.start()
    try:
        results = [queue.get(timeout=60) for _ in procs]  # a child that crashed or hangs fails the test here
    except Empty:
        raise AssertionError(f"a rank gave no result within 60 s (exit codes: {[p.exitcode for p in procs]})") from None
    finally:
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()
    assert [p.exitcode for p in procs] == [0] * 4
    assert results == [45] * 4
    assert len(builds.read_text().split()) == 1, "the index was built more than once"
    built = [p for p in cache.iterdir() if p.is_dir()]
    assert len(built) == 1 and not list(cache.glob("*.lock")) and not list(cache.glob("*.tmp-*"))


@pytest.fixture(scope="module", params=["grown", "real"])
def sentence_data(request, tmp_path_factory):
    """Sentence datasets of the corpus grown from the demo (with this project's BPE), and of the real
    corpora (with the shared multilingual BPE) where ../shared is present: (dataset, tokenizer)."""
    from pretrain.tokenization import load_tokenizer
    from pretrain.tokenization.specials import ROLES

    if request.param == "grown":
        corpus, tokenizer = request.getfixturevalue("small_corpus"), request.getfixturevalue("tokenizer_dir")
    else:
        corpus, tokenizer = request.getfixturevalue("real_corpus"), request.getfixturevalue("shared_bpe")
    out = tmp_path_factory.mktemp("sentences")
    run_tool("preprocess_data", "--input", corpus, "--tokenizer", tokenizer, "--output-prefix", out / "s",
             "--split-sentences", "--no-progress")
    return IndexedDataset(out / "s_text_sentence"), load_tokenizer(tokenizer, ROLES)  # as a masked LM loads it


def mlm_dataset(indexed, tokenizer, whole_word=True, sentence_order=False, samples=400, seq_len=128):
    indices = build_mlm_indices(indexed, range(indexed.num_documents), samples, seq_len, 0.1, seed=3)
    specials = tokenizer.specials.ids
    random_ids = np.setdiff1d(np.arange(tokenizer.vocab_size), list(specials.values()))
    spec = MaskingSpec(specials["mask"], 0.15, whole_word, tokenizer.word_starts(), random_ids)
    return MLMDataset(indexed, indices, seq_len, specials, spec, sentence_order, seed=3, num_samples=samples)


@pytest.mark.parametrize("whole_word", [True, False])
def test_masking_statistics(sentence_data, whole_word):
    indexed, tokenizer = sentence_data
    dataset = mlm_dataset(indexed, tokenizer, whole_word)
    special = set(tokenizer.specials.ids.values())
    starts = tokenizer.word_starts()
    chosen = maskable = masked = randomized = kept = 0
    for i in range(len(dataset)):
        sample = {k: v.numpy() for k, v in dataset[i].items()}
        inputs, labels, attention = sample["input_ids"], sample["labels"], sample["attention_mask"]
        length = int(attention.sum())
        original = np.where(labels != IGNORE_INDEX, labels, inputs)[:length]
        is_special = np.isin(original, list(special))
        assert not np.any((labels[:length] != IGNORE_INDEX) & is_special), "a special token was masked"
        assert np.all(labels[length:] == IGNORE_INDEX)
        picked = labels[:length] != IGNORE_INDEX
        positions = sample["masked_positions"]  # every labelled position, then zeros, at a fixed width
        assert len(positions) == max_predictions(128, 0.15) >= picked.sum()
        assert sorted(positions[: picked.sum()]) == list(np.flatnonzero(picked))
        assert not positions[picked.sum():].any() and labels[0] == IGNORE_INDEX
        chosen += picked.sum()
        maskable += (~is_special).sum()
        masked += (inputs[:length][picked] == tokenizer.specials.mask).sum()
        kept += (inputs[:length][picked] == labels[:length][picked]).sum()
        randomized += ((inputs[:length][picked] != tokenizer.specials.mask)
                       & (inputs[:length][picked] != labels[:length][picked])).sum()
        if whole_word:  # a word (start token + continuations) is masked entirely or not at all
            after_special = np.concatenate([[True], is_special[:-1]])
            word = np.cumsum(starts[original] | is_special | after_special)
            for w in np.unique(word[picked]):
                assert picked[word == w].all(), f"sample {i}: word {w} partly masked"
    assert 0.13 < chosen / maskable < 0.16
    assert 0.77 < masked / chosen < 0.83 and 0.08 < randomized / chosen < 0.12 and 0.08 < kept / chosen < 0.12


# A resume: a new process builds the dataset afresh and reads from the middle of the serving order, in
# whatever order its workers ask; its samples must equal those the first launch read.
FRESH_MLM_SAMPLES = """
import sys
sys.path.insert(0, {root!r})
import numpy as np
from pretrain.data.indexed import IndexedDataset
from pretrain.tokenization import load_tokenizer
from pretrain.tokenization.specials import ROLES
from tests.test_datasets import mlm_dataset
dataset = mlm_dataset(IndexedDataset({prefix!r}), load_tokenizer({tokenizer!r}, ROLES), sentence_order=True)
np.savez({out!r}, **{{f"{{i}}.{{k}}": v.numpy() for i in range(99, -1, -1) for k, v in dataset[i].items()}})
"""


def test_mlm_samples_are_pairs_and_deterministic(sentence_data, tmp_path):
    indexed, tokenizer = sentence_data
    dataset = mlm_dataset(indexed, tokenizer, sentence_order=True)
    ids = tokenizer.specials.ids
    fresh = tmp_path / "fresh.npz"
    script = FRESH_MLM_SAMPLES.format(root=str(ROOT), prefix=indexed.prefix, tokenizer=str(tokenizer.source),
                                      out=str(fresh))
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    resumed = np.load(fresh)
    swapped = 0
    for i in range(100):
        sample = dataset[i]
        inputs, types = sample["input_ids"].numpy(), sample["token_type_ids"].numpy()
        length = int(sample["attention_mask"].sum())
        assert inputs[0] == ids["cls"] and inputs[length - 1] == ids["sep"] and length <= 128
        assert types[:length].min() == 0 and types[length - 1] == 1  # two segments
        swapped += int(sample["sop_label"])
        assert sorted(k.split(".", 1)[1] for k in resumed.files if k.startswith(f"{i}.")) == sorted(sample)
        for key, value in sample.items():
            assert np.array_equal(resumed[f"{i}.{key}"], value.numpy()), f"sample {i}: {key} differs after a resume"
    assert 30 < swapped < 70


def test_sentence_pairs_skip_documents_without_sentences(tmp_path):
    """megatron-core's preprocessing writes a document with no sentences for an empty text; one that ends
    the split is skipped like any other."""
    from pretrain.data.mlm_dataset import build_mlm_mapping

    indexed = make_dataset(tmp_path, [[[5, 6, 7], [8, 9]], [], [[10, 11, 12]], []])
    mapping = build_mlm_mapping(indexed, range(4), seq_len=16, short_seq_prob=0.0, seed=1)
    assert mapping.tolist() == build_mlm_mapping(indexed, range(3), 16, 0.0, 1).tolist() == [[0, 2], [2, 3]]


def test_batches_without_padding_carry_no_mask(sentence_data):
    """A batch whose samples all fill seq_len needs no attention mask (SDPA's flash kernel); one with
    padding keeps it."""
    from pretrain.data.collate import collate

    indexed, tokenizer = sentence_data
    dataset = mlm_dataset(indexed, tokenizer)
    samples = [dataset[i] for i in range(len(dataset))]
    full = [s for s in samples if bool(s["attention_mask"].all())]
    short = [s for s in samples if not bool(s["attention_mask"].all())]
    assert full and short
    assert "attention_mask" not in collate(full[:4])
    padded = collate(full[:3] + short[:1])
    assert padded["attention_mask"].shape == (4, 128) and padded["masked_positions"].shape == (4, max_predictions(128, 0.15))


@pytest.mark.parametrize("which", ["tokenizer_dir", "shared_bpe"])
def test_korean_eojeol_is_one_word(request, which):
    from pretrain.tokenization import load_tokenizer

    tokenizer = load_tokenizer(request.getfixturevalue(which))
    starts = tokenizer.word_starts()
    text = "한국어 위키백과는 누구나 자유롭게 쓸 수 있는 백과사전입니다"
    ids = tokenizer.encode([text])[0]
    words = np.cumsum([True] + [bool(starts[i]) for i in ids[1:]])
    assert words[-1] == len(text.split())


def test_packed_mlm_samples_are_whole_documents_without_padding(tmp_path):
    """ModernBERT's unpadded samples (data.document_mask): each epoch's shuffled documents, each wrapped in
    [CLS] ... [SEP], packed one after another and cut every seq_len tokens (no padding anywhere; a document
    continues in the next sample); positions restart at every [CLS] and at a sample's first token; [CLS],
    [SEP] and the first token are never masked; the masked positions are listed at a fixed width; 30% of the
    candidates masked, 80/10/10; the same index gives the same sample in a new dataset (a resume)."""
    from pretrain.data.packed_mlm import WRAP, PackedMLMDataset

    rng = np.random.default_rng(0)
    vocab, cls, sep, mask = 500, 1, 2, 3
    # documents of 1 to 5 sentences, some longer than a sample
    docs = [[list(rng.integers(4, vocab, rng.integers(1, 30))) for _ in range(rng.integers(1, 6))] for _ in range(80)]
    indexed = make_dataset(tmp_path, docs)
    seq_len, samples = 48, 200
    lengths = indexed.document_lengths() + WRAP
    epochs = epochs_needed(int(lengths.sum()), samples, seq_len)
    indices = build_gpt_indices(lengths, 0, epochs, seq_len, seed=5)
    spec = MaskingSpec(mask, 0.3, False, np.ones(vocab, dtype=bool), np.arange(4, vocab))
    specials = {"cls": cls, "sep": sep, "mask": mask, "pad": 0}
    dataset = PackedMLMDataset(indexed, indices, seq_len, specials, spec, seed=9, num_samples=samples)
    again = PackedMLMDataset(indexed, indices, seq_len, specials, spec, seed=9, num_samples=samples)
    per_epoch = samples_per_epoch(int(lengths.sum()), seq_len)
    order = indices["document_index"].reshape(epochs, len(docs))
    streams = [np.concatenate([[cls, *indexed.document(int(d)), sep] for d in epoch]) for epoch in order]
    width = max_predictions(seq_len, 0.3, packed=True)
    chosen = candidates = masked = kept = 0
    for i in range(samples):
        sample = {k: v.numpy() for k, v in dataset[i].items()}
        assert sorted(sample) == ["input_ids", "labels", "masked_positions", "position_ids"]
        assert all(np.array_equal(sample[k], v.numpy()) for k, v in again[i].items()), f"sample {i} differs"
        inputs, labels, positions = sample["input_ids"], sample["labels"], sample["position_ids"]
        original = np.where(labels != IGNORE_INDEX, labels, inputs)
        epoch, row = divmod(int(indices["shuffle_index"][i]), per_epoch + 1)
        assert original.tolist() == streams[epoch][row * seq_len : (row + 1) * seq_len].tolist(), f"sample {i}"
        starts = np.flatnonzero(positions == 0)
        assert starts[0] == 0 and set(starts[1:]) == set(np.flatnonzero(original == cls)) - {0}
        assert np.array_equal(np.diff(positions)[positions[1:] != 0], np.ones((positions[1:] != 0).sum()))
        picked = labels != IGNORE_INDEX
        assert not picked[0] and not picked[np.isin(original, [cls, sep])].any()
        listed = sample["masked_positions"]
        assert len(listed) == width >= picked.sum() and not listed[picked.sum():].any()
        assert listed[: picked.sum()].tolist() == np.flatnonzero(picked).tolist()
        chosen += picked.sum()
        candidates += seq_len - 1 - np.isin(original[1:], [cls, sep]).sum()
        masked += (inputs[picked] == mask).sum()
        kept += (inputs[picked] == labels[picked]).sum()
    assert 0.29 < chosen / candidates < 0.31
    assert 0.77 < masked / chosen < 0.83 and 0.08 < kept / chosen < 0.12


def test_packed_mlm_leaves_out_the_end_of_document_token(tmp_path, tokenizer_dir, monkeypatch):
    """Data preprocessed with --append-eod gives the same packed MLM samples as without: [SEP] ends each
    document there, and the end-of-document token is not text to predict."""
    import torch

    from pretrain.config import DataConfig
    from pretrain.data.builder import SplitSizes, build_datasets
    from pretrain.tokenization import load_tokenizer

    tokenizer = load_tokenizer(tokenizer_dir)
    rng = np.random.default_rng(3)
    docs = [[list(rng.integers(300, 1000, rng.integers(1, 40)))] for _ in range(300)]
    docs[5] = [[]]  # only the end-of-document token where the others have it
    probed = set(np.linspace(0, len(docs) - 1, 256).astype(int).tolist())  # the documents the detection looks at
    unprobed = min(set(range(len(docs))) - probed)
    plain = make_dataset(tmp_path, docs, "plain")
    eod = tokenizer.specials.eod
    ended = make_dataset(tmp_path, [doc if i == unprobed else [*doc[:-1], [*doc[-1], eod]] for i, doc in enumerate(docs)],
                         "ended")  # one document, among those not probed, made without it
    built = {}
    for indexed in (plain, ended):
        data = DataConfig(tokenizer=str(tokenizer_dir), prefixes=[str(indexed.prefix)], seq_len=48, split="100,0,0",
                          document_mask=True, mask_prob=0.3, cache_dir=str(tmp_path / "cache"))
        built[indexed] = build_datasets(data, tokenizer, "mlm", 7, SplitSizes(200, 0, 0), True)["train"]
    for i in range(200):
        a, b = built[plain][i], built[ended][i]
        assert all(torch.equal(a[k], b[k]) for k in a), f"sample {i} differs"
        assert not (b["input_ids"] == tokenizer.specials.eod).any()

    # A start that finds the index cached reads no document's last token beyond the detection's probes (the
    # whole .bin, a page per document, on a corpus of many small ones), and serves the same samples.
    def refused(self, documents):
        raise AssertionError(f"read the last token of {len(documents)} documents with the index cached")

    monkeypatch.setattr(type(ended), "last_tokens", refused)
    again = build_datasets(data, tokenizer, "mlm", 7, SplitSizes(200, 0, 0), False)["train"]
    assert all(torch.equal(again[i][k], built[ended][i][k]) for i in range(200) for k in again[i])


def test_data_made_with_another_tokenizers_end_of_text_is_named(tmp_path, tokenizer_dir):
    """Documents that all end with one token found nowhere else were made with --append-eod and another
    tokenizer (the advice: set data.tokenizer); documents that end with text need --append-eod."""
    from pretrain.config import DataConfig
    from pretrain.data.builder import check_datasets
    from pretrain.tokenization import load_tokenizer

    tokenizer = load_tokenizer(tokenizer_dir)
    rng = np.random.default_rng(4)
    other_eod, period = 7, 300
    texts = [list(rng.integers(301, 1000, rng.integers(2, 30))) for _ in range(50)]
    made = {"other": [[*t, other_eod] for t in texts], "text": [[*t[:1], period, *t[1:], period] for t in texts]}
    for name, docs in made.items():
        indexed = make_dataset(tmp_path, [[doc] for doc in docs], name)
        (problem,) = check_datasets(DataConfig(tokenizer=str(tokenizer_dir), prefixes=[str(indexed.prefix)]), tokenizer,
                                    "clm")
        if name == "other":
            assert f"every document ends with token id {other_eod}" in problem and "another tokenizer" in problem
            assert "set data.tokenizer" in problem and "Otherwise preprocess with --append-eod" in problem
        else:
            assert "Preprocess with --append-eod" in problem and "another tokenizer" not in problem
