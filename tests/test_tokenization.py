"""Tokenizer training and loading: every layout, special tokens, NFC, and agreement with the
reference implementations (transformers.AutoTokenizer, sentencepiece)."""

from __future__ import annotations

import json
import shutil
import unicodedata

import pytest

from pretrain.tokenization import TokenizerError, load_tokenizer
from pretrain.tokenization.specials import ROLES
from pretrain.tokenization.training import TokenizerTrainingOptions, train_tokenizer
from tests.conftest import grown_documents, read_documents, run_tool

VOCAB = 1500  # what the corpus grown from the demo supports for every kind (unigram stops short of 2000)


@pytest.fixture(scope="module", params=["grown", "real"])
def sample_docs(request) -> list[str]:
    """Korean and German documents the tokenizers did not train on: new recombinations of the demo's
    sentences, and real help pages and quotations where ../shared is present."""
    if request.param == "grown":
        return grown_documents(count=300, seed=7)[-300:]
    files = request.getfixturevalue("corpus_files")
    return (read_documents(files["ko.libreoffice-help-ko"], 120) + read_documents(files["de.fortunes-de"], 200)
            + read_documents(files["de.libreoffice-help-de"], 60))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, small_corpus) -> dict:
    out = {}
    for kind in ("bpe", "wordpiece", "spm-unigram", "spm-bpe"):
        folder = tmp_path_factory.mktemp("tok") / kind
        train_tokenizer(TokenizerTrainingOptions(kind=kind, inputs=[str(small_corpus)], output=str(folder),
                                                 vocab_size=VOCAB, max_bytes=2 << 20))
        out[kind] = folder
    return out


@pytest.mark.parametrize("kind", ["bpe", "wordpiece", "spm-unigram", "spm-bpe"])
def test_trained_tokenizer_loads_in_transformers_with_same_ids(trained, kind, sample_docs):
    from transformers import AutoTokenizer

    ours = load_tokenizer(trained[kind])
    theirs = AutoTokenizer.from_pretrained(str(trained[kind]))
    assert ours.vocab_size == len(theirs) == VOCAB
    assert ours.specials.added == []  # training put every special token in the vocabulary
    assert ours.encode(sample_docs) == [theirs(d, add_special_tokens=False)["input_ids"] for d in sample_docs]
    assert theirs.eos_token == ours.specials.tokens["eod"] and theirs.mask_token == ours.specials.tokens["mask"]


def test_layout_files(trained):
    assert {"vocab.json", "merges.txt", "tokenizer.json"} <= {p.name for p in trained["bpe"].iterdir()}
    vocab = (trained["wordpiece"] / "vocab.txt").read_text().split("\n")
    assert vocab[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert (trained["spm-unigram"] / "spm.model").exists()


@pytest.mark.parametrize("kind,max_mismatch", [("spm-bpe", 0.0), ("spm-unigram", 0.01)])
def test_sentencepiece_conversion_encodes_like_sentencepiece(trained, kind, max_mismatch, sample_docs):
    """tokenizer.json must give sentencepiece's own ids (unigram may break rare score ties differently)."""
    import sentencepiece as spm

    ours = load_tokenizer(trained[kind])
    processor = spm.SentencePieceProcessor(model_file=str(trained[kind] / "spm.model"))
    want = [processor.encode(unicodedata.normalize("NFC", d)) for d in sample_docs]
    got = ours.encode(sample_docs)
    assert sum(a != b for a, b in zip(got, want)) <= max_mismatch * len(sample_docs)


def test_nfc_normalization_makes_decomposed_korean_identical(trained):
    text = "한국어 위키백과는 자유 백과사전입니다."
    decomposed = unicodedata.normalize("NFD", text)
    assert decomposed != text
    for kind in ("bpe", "wordpiece", "spm-bpe"):
        tok = load_tokenizer(trained[kind])
        assert tok.encode([decomposed]) == tok.encode([text]), kind


def test_sample_is_capped_and_spread_over_files(tmp_path):
    from pretrain.tokenization.training import SampleStats, sample_texts
    from tests.conftest import write_jsonl

    docs = grown_documents(count=4000, seed=3)
    korean = write_jsonl(tmp_path / "ko.jsonl", [d for d in docs if "다" in d])
    german = write_jsonl(tmp_path / "de.jsonl", [d for d in docs if "다" not in d])
    stats = SampleStats()
    options = TokenizerTrainingOptions(kind="bpe", inputs=[str(korean), str(german)], output="unused", max_bytes=1 << 18)
    texts = list(sample_texts(options, stats))
    assert stats.text_bytes < 1.3 * (1 << 18)  # the cap, plus at most one document per file
    assert sum(korean.stat().st_size + german.stat().st_size for _ in [0]) > 4 * (1 << 18)
    assert any("다" in t for t in texts) and any("die" in t for t in texts)  # both files, read from their starts


def test_real_corpora_sample_is_capped_and_spread_over_files(corpus_files):
    from pretrain.tokenization.training import SampleStats, sample_texts

    stats = SampleStats()
    options = TokenizerTrainingOptions(kind="bpe", inputs=[str(p) for p in corpus_files.values()], output="unused",
                                       max_bytes=1 << 20)
    texts = list(sample_texts(options, stats))
    assert stats.text_bytes < 1.3 * (1 << 20)  # the cap, plus at most one document per file
    assert any("Fontwork" in t or "폰트" in t for t in texts) and any("--" in t for t in texts)  # ko and de files


@pytest.fixture(scope="module")
def gpt2_layout(tmp_path_factory, tokenizer_dir):
    """Only vocab.json + merges.txt, as GPT-2 and many German GPT-2s ship: this project's BPE without
    its tokenizer.json and configs."""
    import shutil

    folder = tmp_path_factory.mktemp("gpt2_layout")
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(tokenizer_dir / name, folder / name)
    return folder


def test_gpt2_layout_gets_special_tokens_added(gpt2_layout):
    """A causal LM's load (eod only) finds GPT-2's end-of-text and encodes as GPT2Tokenizer does, a literal <s>
    included; a masked LM's registers the other roles' tokens, which vocab.json has already."""
    from transformers import GPT2Tokenizer

    tok = load_tokenizer(gpt2_layout)
    vocab = json.loads((gpt2_layout / "vocab.json").read_text())
    assert tok.family == "byte_bpe"
    assert tok.specials.tokens["eod"] == "<|endoftext|>" and tok.specials.ids["eod"] == vocab["<|endoftext|>"]
    assert tok.specials.ids == {"eod": vocab["<|endoftext|>"], "unk": vocab["<|endoftext|>"]}  # GPT-2's convention
    assert tok.specials.added == [] and tok.vocab_size == len(vocab)
    reference = GPT2Tokenizer.from_pretrained(str(gpt2_layout))
    for text in ["안녕하세요, 세계!", "Grüß Gott, Straße <|endoftext|> Ende", "  spaces\n\tand tabs ", "x <s> y <mask>"]:
        assert tok.encode([text])[0] == reference(text)["input_ids"]
    masked = load_tokenizer(gpt2_layout, ROLES)
    # the other roles' tokens are in vocab.json already: registered as special, the vocabulary does not grow
    assert masked.specials.added == [] and masked.vocab_size == len(vocab)
    assert [masked.specials.ids[r] for r in ("pad", "cls", "sep", "mask")] == \
        [vocab[t] for t in ("<pad>", "<s>", "</s>", "<mask>")]


@pytest.mark.parametrize("which", ["gpt2_layout", "shared_bpe"])
@pytest.mark.parametrize("roles", [("eod",), ROLES], ids=["clm", "mlm"])
def test_saved_folder_round_trips_with_added_tokens(tmp_path, request, which, roles):
    """A saved folder names the roles its load found or added, and no other: reloaded it gives the same ids, and
    AutoTokenizer the same tokens (a causal LM's has no mask or pad token, as the release)."""
    from transformers import AutoTokenizer

    tok = load_tokenizer(request.getfixturevalue(which), roles)
    tok.save(tmp_path / "saved")
    again = load_tokenizer(tmp_path / "saved", roles)
    assert again.specials.ids == tok.specials.ids and again.specials.added == [] and again.vocab_size == tok.vocab_size
    hf = AutoTokenizer.from_pretrained(str(tmp_path / "saved"))
    assert len(hf) == tok.vocab_size and hf.eos_token_id == tok.specials.eod
    assert hf.mask_token_id == tok.specials.ids.get("mask") and hf.pad_token_id == tok.specials.ids.get("pad")
    assert hf("Hallo Welt <s>")["input_ids"] == tok.encode(["Hallo Welt <s>"])[0]


@pytest.mark.parametrize("kind", ["bpe", "wordpiece", "spm-unigram"])
def test_a_masked_lms_export_wraps_each_text_as_training_did(trained, kind, tmp_path):
    """The export of a masked LM (family.sequence_wrap) saves a tokenizer that encodes a text as [CLS] text
    [SEP] and a pair as [CLS] A [SEP] B [SEP] (B's type id 1), with whatever vocabulary: a byte-level BPE's
    own post-processor adds nothing, and its offsets stay. Without special tokens the ids do not change. Its
    bos and eos are [CLS] and [SEP], and a mask token in text stands for a whole word as training masked it (its
    space or ▁ included)."""
    from transformers import AutoTokenizer

    from pretrain.model.families import get_family

    tok = load_tokenizer(trained[kind])
    plain = tok.encode(["Grüß Gott, 안녕하세요"])[0]
    tok.for_encoder(*get_family("modernbert").sequence_wrap)
    tok.save(tmp_path / "saved")
    hf = AutoTokenizer.from_pretrained(str(tmp_path / "saved"))
    cls, sep = tok.specials.ids["cls"], tok.specials.ids["sep"]
    assert hf("Grüß Gott, 안녕하세요")["input_ids"] == [cls, *plain, sep]
    assert hf("Grüß Gott, 안녕하세요", add_special_tokens=False)["input_ids"] == plain
    pair = hf("Hallo", "Welt", return_token_type_ids=True)
    a, b = tok.encode(["Hallo", "Welt"])
    assert pair["input_ids"] == [cls, *a, sep, *b, sep]
    assert pair["token_type_ids"] == [0] * (len(a) + 2) + [1] * (len(b) + 1)
    encoded = hf("Hallo Welt", return_offsets_mapping=True)
    assert "Hallo Welt"[slice(*encoded["offset_mapping"][1])] == hf.decode(encoded["input_ids"][1:2])
    assert (hf.bos_token_id, hf.eos_token_id) == (cls, sep)
    # "die <mask> gelb" is "die Katze gelb" as training masked it: the word's tokens (its space or ▁ included)
    # replaced by one mask, and nothing else changed
    text = tok.encode(["die Katze gelb"])[0]
    words = [0, *(k for k, index in enumerate(text) if k and tok.word_starts()[index])]  # a text begins a word
    masked = hf(f"die {hf.mask_token} gelb", add_special_tokens=False)["input_ids"]
    assert masked == [*text[:words[1]], hf.mask_token_id, *text[words[2]:]], hf.convert_ids_to_tokens(masked)
    assert get_family("llama").sequence_wrap is None and get_family("gpt2").sequence_wrap is None


def test_a_bos_is_the_one_token_a_tokenizer_puts_before_a_text(trained, llama3_style_tokenizer, tmp_path):
    """Llama 3's layout has a BOS and keeps it when saved (tokenizer_config's bos_token, the post-processor);
    this project's tokenizers have none: WordPiece's [CLS] ... [SEP] is not a BOS."""
    from transformers import AutoTokenizer

    assert all(load_tokenizer(trained[kind]).bos_id is None for kind in trained)
    tok = load_tokenizer(llama3_style_tokenizer)
    assert tok.bos_id == tok.backend.token_to_id("<|begin_of_text|>") and tok.specials.tokens["eod"] == "<|end_of_text|>"
    tok.save(tmp_path / "saved")
    saved = AutoTokenizer.from_pretrained(str(tmp_path / "saved"))
    assert saved.bos_token == "<|begin_of_text|>" and saved("Hallo")["input_ids"] == [tok.bos_id, *tok.encode(["Hallo"])[0]]
    assert load_tokenizer(tmp_path / "saved").bos_id == tok.bos_id


@pytest.mark.parametrize("add_bos_token", [True, None, False])
def test_a_sentencepiece_only_llama_folder_starts_texts_as_configured(trained, tmp_path, add_bos_token):
    """A release with only tokenizer.model (Llama 2's original layout) encodes as transformers' tokenizer for
    the same folder does: <s> first where its tokenizer_config.json sets add_bos_token (Llama 2's releases
    do), so --append-eod data starts each document with it; nothing where it does not."""
    import shutil

    from transformers import AutoTokenizer

    folder = tmp_path / "llama2"
    folder.mkdir()
    shutil.copyfile(trained["spm-bpe"] / "spm.model", folder / "tokenizer.model")
    config = {"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
    if add_bos_token is not None:
        config["add_bos_token"] = add_bos_token
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    tok = load_tokenizer(folder)
    text = "Grüß Gott, 안녕하세요"
    assert tok.bos_id == (tok.backend.token_to_id("<s>") if add_bos_token else None)
    assert tok.backend.encode(text).ids == AutoTokenizer.from_pretrained(str(folder))(text)["input_ids"]


def test_a_tokenizer_other_than_the_releases_is_reported(trained, llama3_style_tokenizer, tmp_path, caplog):
    """model.init_from's rows stand for its own tokenizer's tokens: data.tokenizer giving other tokens to the
    ids both have is warned about; the release's own, or a copy that extends it (tokens added after its
    vocabulary), is not."""
    from pretrain.tokenization import warn_if_another_vocabulary

    extended = load_tokenizer(llama3_style_tokenizer)
    extended.backend.add_tokens(["Straße", "안녕하세요"])
    extended.save(tmp_path / "extended")
    with caplog.at_level("WARNING"):
        for tokenizer in (llama3_style_tokenizer, tmp_path / "extended"):
            warn_if_another_vocabulary(load_tokenizer(tokenizer), str(llama3_style_tokenizer))
        assert "gives other tokens" not in caplog.text
        warn_if_another_vocabulary(load_tokenizer(trained["wordpiece"]), str(llama3_style_tokenizer))
    assert "gives other tokens than model.init_from" in caplog.text


def test_kogpt2_style_folder_keeps_its_own_specials(tmp_path, gpt2_layout):
    """A tokenizer.json with its special tokens declared in tokenizer_config.json gets nothing added."""
    base = load_tokenizer(gpt2_layout)
    base.save(tmp_path / "ko")
    config = json.loads((tmp_path / "ko" / "tokenizer_config.json").read_text())
    config.update(eos_token="</s>", bos_token="</s>", pad_token="<pad>")
    (tmp_path / "ko" / "tokenizer_config.json").write_text(json.dumps(config))
    tok = load_tokenizer(tmp_path / "ko")
    assert tok.specials.added == [] and tok.specials.tokens["eod"] == "</s>"


def test_word_starts(trained):
    bpe = load_tokenizer(trained["bpe"])
    starts = bpe.word_starts()
    ids = bpe.encode(["한국어 위키백과는 자유"])[0]
    assert [bool(starts[i]) for i in ids][1:] == [bpe.backend.id_to_token(i).startswith("Ġ") for i in ids][1:]
    wp = load_tokenizer(trained["wordpiece"])
    ws = wp.word_starts()
    assert ws[wp.backend.token_to_id("[CLS]")] and not any(ws[i] for t, i in wp.backend.get_vocab().items()
                                                            if t.startswith("##"))


def test_not_a_tokenizer_folder_and_offline_hub_name(tmp_path, monkeypatch):
    (tmp_path / "readme.txt").write_text("hi")
    with pytest.raises(TokenizerError, match="is not a tokenizer folder"):
        load_tokenizer(tmp_path)
    with pytest.raises(TokenizerError, match="download the tokenizer first"):
        load_tokenizer("no-such-org/no-such-model")
    (tmp_path / "tok" / "bpe").mkdir(parents=True)  # a missing folder beside others: what is there instead
    with pytest.raises(TokenizerError, match=r"no tokenizer folder .*tok/nope: it does not exist \(.*tok holds bpe\)"):
        load_tokenizer(tmp_path / "tok" / "nope")
    asked = []  # a name like org/model is asked of the hub even where a folder named org exists here
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("transformers.AutoTokenizer.from_pretrained", lambda name: asked.append(name) or 1 / 0)
    with pytest.raises(ZeroDivisionError):
        load_tokenizer("tok/some-model")
    assert asked == ["tok/some-model"]


def test_cli_trains_and_refuses_to_overwrite(tmp_path, small_corpus):
    out = tmp_path / "tok"
    run_tool("train_tokenizer", "--type", "bpe", "--input", small_corpus, "--output", out, "--vocab-size", "1000")
    again = run_tool("train_tokenizer", "--type", "bpe", "--input", small_corpus, "--output", out, check=False)
    assert again.returncode == 2 and "holds a tokenizer: pass --overwrite" in again.stderr
    assert "Traceback" not in again.stderr
    run_tool("train_tokenizer", "--type", "bpe", "--input", small_corpus, "--output", out, "--vocab-size", "900",
             "--overwrite")
    assert out.stat().st_mode & 0o755 == 0o755  # a usual folder's mode, not the temporary folder's 0700
    # never a folder of the user's own files, or one holding the input: --overwrite would have deleted them
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("precious")
    shutil.copy(small_corpus, mine / "raw.jsonl")
    for source, message in ((small_corpus, "holds files that are not a tokenizer (notes.txt, raw.jsonl)"),
                            (mine / "raw.jsonl", f"holds the input {mine / 'raw.jsonl'}")):
        refused = run_tool("train_tokenizer", "--type", "bpe", "--input", source, "--output", mine, "--overwrite",
                           check=False)
        assert refused.returncode == 2 and message in refused.stderr, refused.stderr[-2000:]
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt", "raw.jsonl"]


def test_shared_gpt2_layout_gets_special_tokens_added(shared_bpe):
    """The real multilingual BPE (GPT-2's layout; its vocab.json has 50,256 tokens and no end-of-text): a causal
    LM's load adds only the end-of-text; a masked LM's adds the other roles it lacks after it."""
    from transformers import GPT2Tokenizer

    tok = load_tokenizer(shared_bpe)
    assert tok.specials.ids == {"eod": 50256, "unk": 50256} and tok.specials.added == ["eod"] and tok.vocab_size == 50257
    masked = load_tokenizer(shared_bpe, ROLES)
    assert masked.specials.added == ["eod", "pad", "cls", "sep", "mask"] and masked.vocab_size == 50261
    reference = GPT2Tokenizer.from_pretrained(str(shared_bpe))
    for text in ["안녕하세요, 세계!", "Grüß Gott, Straße <|endoftext|> Ende", "a literal <s> and <pad>"]:
        assert tok.encode([text])[0] == reference(text)["input_ids"]


LITERALS = "x <s> y </s> z <mask> <pad> [MASK] [SEP] <unk> w"  # special tokens elsewhere, plain text to a release


def test_a_causal_lm_keeps_a_releases_vocabulary(llama3_style_tokenizer):
    """A release laid out as Llama 3's (no <pad>, <s>, </s>, <mask>): a causal LM's load adds nothing, so the
    vocabulary (and a continued model's embedding) keeps the release's size, and text holding those strings
    encodes as the release encodes it. A masked LM's load appends the four roles it needs after the vocabulary."""
    from transformers import AutoTokenizer

    release = AutoTokenizer.from_pretrained(str(llama3_style_tokenizer))
    tok = load_tokenizer(llama3_style_tokenizer)
    eod = release.eos_token_id
    assert tok.vocab_size == len(release) and tok.specials.added == []
    assert tok.specials.ids == {"eod": eod, "unk": eod}
    assert tok.encode([LITERALS])[0] == release(LITERALS, add_special_tokens=False)["input_ids"]
    assert max(tok.encode([LITERALS])[0]) < len(release)
    masked = load_tokenizer(llama3_style_tokenizer, ROLES)
    assert masked.specials.added == ["pad", "cls", "sep", "mask"] and masked.vocab_size == len(release) + 4
    with pytest.raises(AttributeError, match="no mask token: load it with roles="):
        getattr(tok.specials, "mask")  # noqa: B009 - the attribute access is the test


@pytest.mark.parametrize("which", ["bpe", "wordpiece", "spm-unigram", "gpt2_layout", "llama3_style_tokenizer"])
def test_roles_append_after_the_vocabulary_and_never_renumber(trained, request, which):
    """Loads of one folder with fewer roles (preprocessing's, a causal LM's) and with all of them (a masked LM's)
    give every token the first has the same id, and the same id to every role both have: data preprocessed with
    the one means the same to a model trained with the other. This project's tokenizers have every role."""
    folder = trained[which] if which in trained else request.getfixturevalue(which)
    lean, full = load_tokenizer(folder), load_tokenizer(folder, ROLES)
    assert lean.specials.ids.items() <= full.specials.ids.items()
    full_vocab = full.backend.get_vocab(with_added_tokens=True)
    assert all(full_vocab[token] == index for token, index in lean.backend.get_vocab(with_added_tokens=True).items())
    assert min((full.specials.ids[role] for role in full.specials.added), default=lean.vocab_size) >= lean.vocab_size
    if which in trained:
        assert lean.vocab_size == full.vocab_size and lean.specials.ids == full.specials.ids
        assert lean.encode([LITERALS]) == full.encode([LITERALS])


def test_a_role_added_to_a_vocabulary_with_a_hole_is_refused(tmp_path):
    """A vocab.txt with a line repeated leaves an id without a token, and counts one token fewer than its ids: a
    [MASK] added to it would take the id of its last token. Refused with the cause, where a role must be added."""
    from pretrain.tokenization.loading import TokenizerError

    folder = tmp_path / "wordpiece"
    folder.mkdir()
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "the", *[f"w{i}" for i in range(40)], "the", "zzzq"]
    (folder / "vocab.txt").write_text("\n".join(words) + "\n", encoding="utf-8")
    lean = load_tokenizer(folder)  # nothing to add: its ids are as the file gives them, its size past the highest
    assert lean.backend.token_to_id("zzzq") == len(words) - 1 == lean.vocab_size - 1
    with pytest.raises(TokenizerError, match="a line repeated in its vocab.txt"):
        load_tokenizer(folder, ROLES)


def test_a_run_keeps_the_roles_its_first_launch_saved(llama3_style_tokenizer, tmp_path):
    """A resumed launch loads data.tokenizer with its family's roles and those RUN_DIR/tokenizer names: a causal
    LM's run begun when every load added all six keeps their ids and its vocabulary."""
    from pretrain.tokenization import run_roles

    run = tmp_path / "run"
    assert run_roles(("eod",), run) == ("eod",) and run_roles(ROLES, run) == ROLES
    load_tokenizer(llama3_style_tokenizer, ROLES).save(run / "tokenizer")  # what an earlier version saved
    assert run_roles(("eod",), run) == ROLES
    assert run_roles(("eod",), None) == ("eod",)  # a first launch: a tokenizer a failed one left is not the run's
    load_tokenizer(llama3_style_tokenizer).save(run / "tokenizer")  # this version's
    assert run_roles(("eod",), run) == ("eod", "unk")


def test_a_decoder_without_a_pad_token_generates_with_end_of_text_as_pad():
    from pretrain.model.families import get_family

    for name in ("gpt2", "llama"):
        generation = get_family(name).generation_config({"eod": 5, "unk": 5})
        assert (generation.eos_token_id, generation.pad_token_id, generation.bos_token_id) == (5, 5, 5)
        assert get_family(name).generation_config({"eod": 5, "pad": 7, "bos": 3}).pad_token_id == 7


@pytest.mark.parametrize("bad", ["cut.jsonl.gz", "cut.jsonl.zst", "surrogate.jsonl"])
def test_bad_input_stops_training_naming_the_file_or_is_skipped_and_counted(tmp_path, bad):
    """As preprocessing: a truncated file or a lone surrogate is an error naming the file and line, or with
    --skip-bad-input the file's complete records are kept and the file reported, the record skipped and counted."""
    import gzip

    import zstandard

    lines = [json.dumps({"text": f"Satz {i} über 날씨 {i * 31 % 97}"}) + "\n" for i in range(20000)]
    rows = "".join(lines).encode()
    if bad == "surrogate.jsonl":
        data = "".join([*lines[:55], '{"text": "a\\ud800b"}\n', *lines[55:]]).encode()
        said, skipped = ":56: unpaired surrogate", "skipped 1 (unpaired surrogate)"
    else:
        blob = (gzip.compress if bad.endswith(".gz") else zstandard.ZstdCompressor().compress)(rows)
        data, said, skipped = blob[: len(blob) // 2], ": the data ends early after line", "truncated (kept its complete"
    (tmp_path / bad).write_bytes(data)
    args = ("train_tokenizer", "--type", "bpe", "--input", tmp_path / bad, "--vocab-size", "300")
    stopped = run_tool(*args, "--output", tmp_path / "stopped", check=False)
    assert stopped.returncode == 2 and f"{tmp_path / bad}{said}" in stopped.stderr, stopped.stderr[-2000:]
    assert "Traceback" not in stopped.stderr and not (tmp_path / "stopped").exists()
    skipping = run_tool(*args, "--output", tmp_path / "tok", "--skip-bad-input")
    assert skipped in skipping.stderr and (tmp_path / "tok" / "tokenizer.json").exists()
