"""Shared fixtures. Everything the suite needs is made here from the repository: a corpus of Korean and
German documents grown from the demo corpus, and a byte-level BPE trained on it. The real corpora and
tokenizer in ../shared (``shared_bpe``, ``corpus_files``) feed extra tests that run where they are
present (and must, under PRETRAIN_REQUIRE_SHARED=1, as in CI)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEMO_CORPUS = ROOT / "pretrain" / "demo" / "corpus"
SHARED = Path(os.environ.get("PRETRAIN_SHARED", ROOT.parent / "shared"))
CORPORA = SHARED / "corpora"
SHARED_BPE = SHARED / "tokenizers" / "multilingual-bpe"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def in_ci() -> bool:
    """CI (CI=true, as CI services and .ci/run set it, or PRETRAIN_REQUIRE_SHARED=1): every test must run."""
    return os.environ.get("CI", "").lower() in ("true", "1") or os.environ.get("PRETRAIN_REQUIRE_SHARED") == "1"


def skip_outside_ci(reason: str) -> None:
    """Skip for ``reason`` on a developer's machine (scripts/test.sh lists the skips and why at the end); in CI,
    where the test must run, the same reason is a failure."""
    if in_ci():
        pytest.fail(f"{reason}, but CI must run this test (CI=true or PRETRAIN_REQUIRE_SHARED=1)", pytrace=False)
    pytest.skip(reason)


def require_shared() -> None:
    """Skip when ../shared is absent, except in CI, where it must exist."""
    if not CORPORA.exists():
        skip_outside_ci(f"an extra test on the real corpora in {CORPORA}, which this checkout does not have")


def demo_documents() -> list[str]:
    """The demo corpus's documents (paragraphs), Korean then German."""
    docs = []
    for path in sorted(DEMO_CORPUS.glob("*.txt")):
        docs += [p.strip() for p in path.read_text(encoding="utf-8").split("\n\n") if p.strip()]
    return docs


def grown_documents(count: int = 400, seed: int = 0) -> list[str]:
    """The demo documents, then ``count`` more made of their sentences recombined within a language
    (seeded): real Korean and German sentences in new orders, enough text to train on."""
    from pretrain.data.sentences import split_sentences

    docs = demo_documents()
    by_language: dict[bool, list[str]] = {True: [], False: []}
    for doc in docs:
        by_language[any("\uac00" <= ch <= "\ud7a3" for ch in doc)].extend(split_sentences(doc))
    rng = random.Random(seed)
    for index in range(count):
        sentences = by_language[index % 2 == 0]
        docs.append(" ".join(rng.sample(sentences, rng.randint(3, 9))))
    return docs


def write_jsonl(path: Path, texts: list[str], **extra) -> Path:
    with open(path, "w", encoding="utf-8") as handle:
        for text in texts:
            handle.write(json.dumps({"text": text, **extra}, ensure_ascii=False) + "\n")
    return path


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory) -> Path:
    """A jsonl of ~440 Korean and German documents grown from the demo corpus."""
    return write_jsonl(tmp_path_factory.mktemp("corpus") / "mixed.jsonl", grown_documents())


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory, small_corpus) -> Path:
    """A byte-level BPE of 1,024 tokens (+ specials) trained on ``small_corpus`` by this project."""
    from pretrain.tokenization.training import TokenizerTrainingOptions, train_tokenizer

    folder = tmp_path_factory.mktemp("tok") / "bpe"
    train_tokenizer(TokenizerTrainingOptions(kind="bpe", inputs=[str(small_corpus)], output=str(folder),
                                             vocab_size=1024))
    return folder


CHAT_TEMPLATE = "{% for message in messages %}{{ message['content'] }}{{ eos_token }}{% endfor %}"


@pytest.fixture(scope="session")
def llama3_style_tokenizer(tmp_path_factory, small_corpus) -> Path:
    """A byte-level BPE of 1,024 tokens laid out as Llama 3 ships its tokenizer: trained by the ``tokenizers``
    library alone (no <pad>, <s>, </s> or <mask> in it), then <|begin_of_text|>, <|end_of_text|> and two reserved
    tokens added as special, a post-processor that puts the BOS before every text, bos and eos named in
    tokenizer_config.json, and a chat template there."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    texts = [json.loads(line)["text"] for line in small_corpus.read_text(encoding="utf-8").splitlines()]
    backend.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=1024, show_progress=False,
                                                           initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    bos, eos = "<|begin_of_text|>", "<|end_of_text|>"
    backend.add_special_tokens([AddedToken(token, special=True, normalized=False) for token in
                                (bos, eos, "<|reserved_special_token_0|>", "<|finetune_right_pad_id|>")])
    backend.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single=f"{bos}:0 $A:0", pair=f"{bos}:0 $A:0 {bos}:1 $B:1",
                                      special_tokens=[(bos, backend.token_to_id(bos))])])
    folder = tmp_path_factory.mktemp("tok") / "llama3"
    folder.mkdir()
    backend.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": bos, "eos_token": eos, "tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 131072,
         "chat_template": CHAT_TEMPLATE}))
    return folder


@pytest.fixture(scope="session")
def shared_bpe() -> Path:
    require_shared()
    return SHARED_BPE


@pytest.fixture(scope="session")
def corpus_files() -> dict[str, Path]:
    """The real Korean and German jsonl.zst files by language-source name."""
    require_shared()
    return {p.name.split(".jsonl")[0]: p for p in sorted(CORPORA.glob("*.jsonl.zst"))}


def read_documents(path: Path, limit: int | None = None) -> list[str]:
    import zstandard

    texts = []
    with zstandard.open(path, "rt", encoding="utf-8") as handle:
        for line in handle:
            texts.append(json.loads(line)["text"])
            if limit and len(texts) >= limit:
                break
    return texts


@pytest.fixture(scope="session")
def real_corpus(tmp_path_factory, corpus_files) -> Path:
    """A plain jsonl of ~400 real documents: Korean help pages, German help pages and quotations."""
    out = tmp_path_factory.mktemp("real") / "mixed.jsonl"
    with open(out, "w", encoding="utf-8") as handle:
        for name, limit in (("ko.libreoffice-help-ko", 150), ("de.libreoffice-help-de", 100), ("de.fortunes-de", 150)):
            for text in read_documents(corpus_files[name], limit):
                handle.write(json.dumps({"text": text, "source": name}, ensure_ascii=False) + "\n")
    return out


def run_tool(tool: str, *args: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    """Run tools/<tool>.py as a user would; returns the completed process (text output)."""
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / f"{tool}.py"), *map(str, args)],
                          capture_output=True, text=True, **kwargs)
    if check and proc.returncode != 0:
        raise AssertionError(f"{tool} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


# pretrain-eval's models (tests/test_eval.py, tests/test_eval_refusals.py)
@pytest.fixture(scope="module")
def gpt2_folder(tmp_path_factory, tokenizer_dir):
    """A random tiny GPT-2 with the test tokenizer, as pretrain-export writes a folder. Its weights are
    large (std 0.5) so that its predictions depend strongly on the context: a window given the wrong
    context scores differently."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from pretrain.tokenization import load_tokenizer

    tokenizer = load_tokenizer(tokenizer_dir)
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=tokenizer.vocab_size, n_positions=48, n_embd=64, n_layer=2, n_head=2,
                        initializer_range=0.5, bos_token_id=tokenizer.specials.eod, eos_token_id=tokenizer.specials.eod)
    folder = tmp_path_factory.mktemp("gpt2") / "hf"
    GPT2LMHeadModel(config).save_pretrained(folder)
    tokenizer.save(folder)
    return folder


@pytest.fixture(scope="module")
def llama_folder(tmp_path_factory, llama3_style_tokenizer):
    """The same for LlamaForCausalLM (grouped-query attention, rotary base 50,000) with a tokenizer laid out as
    Llama 3's (a BOS before every text): what the Llama family exports."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from pretrain.tokenization import load_tokenizer

    tokenizer = load_tokenizer(llama3_style_tokenizer)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=tokenizer.vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=48, rope_theta=50000.0,
                         initializer_range=0.5, bos_token_id=tokenizer.bos_id, eos_token_id=tokenizer.specials.eod)
    folder = tmp_path_factory.mktemp("llama") / "hf"
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save(folder)
    return folder


@pytest.fixture(scope="module")
def documents_file(tmp_path_factory):
    """tests/eval_models.py's DOCUMENTS as jsonl."""
    from tests.eval_models import DOCUMENTS

    return write_jsonl(tmp_path_factory.mktemp("docs") / "docs.jsonl", DOCUMENTS)


@pytest.fixture(scope="module")
def modernbert_run(tmp_path_factory, tokenizer_dir):
    """A ModernBERT run dir as the trainer leaves one, without training: config.yaml (data.seq_len=64,
    below the model's 512 positions; run.seed=7; 20% masked, token by token), the model's config, the
    tokenizer and one checkpoint of a fresh model saved without ZeRO; and its export."""
    import torch

    from pretrain.config import Config
    from pretrain.config.schema import DataConfig, ModelConfig, RunConfig
    from pretrain.export import export_checkpoint
    from pretrain.model import build_model
    from pretrain.tokenization import load_tokenizer

    root = tmp_path_factory.mktemp("modernbert")
    run_dir = root / "run"
    config = Config(model=ModelConfig(preset="modernbert-tiny"), data=DataConfig(
        tokenizer=str(tokenizer_dir), seq_len=64, mask_prob=0.2, whole_word_masking=False),  # not the defaults
        run=RunConfig(dir=str(run_dir), seed=7))
    tokenizer = load_tokenizer(tokenizer_dir)
    model = build_model(config.model, tokenizer.vocab_size, tokenizer.specials.ids, sentence_order=False, seed=0,
                        ds_config=None)
    assert model.hf.config.max_position_embeddings == 512
    checkpoint = run_dir / "checkpoints" / "step00000001"
    checkpoint.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(config.to_yaml())
    model.hf.config.architectures = [type(model.hf).__name__]  # as the trainer writes it
    model.hf.config.save_pretrained(run_dir / "model")
    tokenizer.save(run_dir / "tokenizer")
    torch.save({"module": model.state_dict()}, checkpoint / "mp_rank_00_model_states.pt")
    (checkpoint / "COMPLETE").write_text("")
    export_checkpoint(run_dir, root / "hf")
    return {"run": run_dir, "hf": root / "hf"}
