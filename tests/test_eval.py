"""Evaluation: pretrain-eval's rolling-window scoring against lm-evaluation-harness's own code on the
same model and documents, .bin/.idx prefixes scored as their text, masked LMs (its refusals:
tests/test_eval_refusals.py); the
per-token byte table; and, in a 2-rank ZeRO-3 run on a blend of two prefixes, the trainer's loss and
bits per byte per source against the exported model, and pretrain-eval on the run dir itself."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch

from pretrain.evaluation.sources import source_batches, source_names
from pretrain.evaluation.token_bytes import token_byte_lengths
from pretrain.export import export_checkpoint
from pretrain.tokenization import load_tokenizer
from tests.conftest import grown_documents, run_tool, write_jsonl
from tests.distributed import launch, preprocess
from tests.eval_models import DOCUMENTS, evaluate, require_lm_eval


def test_rolling_windows_are_lm_evals():
    require_lm_eval()
    from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

    from pretrain.evaluation.scoring import rolling_windows

    for length in range(0, 23):
        tokens = list(range(100, 100 + length))
        for max_length in range(1, 8):
            ours = rolling_windows(tokens, 7, max_length)
            theirs = [make_disjoint_window(w) for w in get_rolling_token_windows(tokens, 7, max_length, 1)]
            assert len(ours) == len(theirs), (length, max_length)
            for window, (context, continuation) in zip(ours, theirs):
                fed = (context + continuation)[-(max_length + 1):][:-1]  # what HFLM runs the model on
                assert window.inputs == fed and window.targets[-window.scored:] == continuation, (length, max_length)
                assert window.targets == (context + continuation)[-(max_length + 1):][1:]


@pytest.mark.parametrize("architecture", ["gpt2", "llama"])
def test_bits_per_byte_agree_with_lm_eval(architecture, request, documents_file, tmp_path):
    """The same random GPT-2 (or Llama) folder and documents through lm-eval's HFLM.loglikelihood_rolling
    and its bits_per_byte aggregation: the same figure to 1e-6 (in fact ~3e-8), the same nll per document."""
    require_lm_eval()
    folder = request.getfixturevalue(f"{architecture}_folder")
    from lm_eval.api.instance import Instance
    from lm_eval.api.metrics import bits_per_byte
    from lm_eval.models.huggingface import HFLM

    report = evaluate(folder, "--input", documents_file, "--output", tmp_path / "eval.json", "--per-document",
                      "--device", "cpu")
    assert report["max_length"] == 48 and report["objective"] == "clm"
    lm = HFLM(pretrained=str(folder), backend="causal", device="cpu", batch_size=1, dtype="float32")
    requests = [Instance("loglikelihood_rolling", {}, (text,), index) for index, text in enumerate(DOCUMENTS)]
    loglikelihoods = lm.loglikelihood_rolling(requests, disable_tqdm=True)
    expected = bits_per_byte([(ll, len(text.encode("utf-8"))) for ll, text in zip(loglikelihoods, DOCUMENTS)])
    total = report["total"]
    assert total["bits_per_byte"] == pytest.approx(expected, rel=1e-6)
    assert total["documents"] == len(DOCUMENTS) and total["bytes"] == sum(len(d.encode()) for d in DOCUMENTS)
    assert total["document_nll_nats"] == pytest.approx([-ll for ll in loglikelihoods], rel=1e-6, abs=1e-6)
    assert total["loss"] == pytest.approx(total["nll_nats"] / total["tokens"]) and 2 < total["bits_per_byte"] < 20


@pytest.mark.parametrize("architecture", ["gpt2", "llama"])
def test_a_prefix_scores_as_its_text(architecture, request, documents_file, tmp_path):
    """The .bin/.idx made from the documents (end-of-document tokens appended; Llama's BOS first) gives the
    text's figures: the same tokens, the same bytes (from the decoded text, a BOS standing for none), the
    same nll."""
    folder = request.getfixturevalue(f"{architecture}_folder")
    preprocess(documents_file, folder, tmp_path / "docs", "--append-eod")
    prefix = tmp_path / "docs_text_document"
    report = evaluate(folder, "--input", documents_file, f"{prefix}.bin", "--output", tmp_path / "eval.json",
                      "--per-document", "--batch-tokens", "200")
    text, data = report["inputs"]
    assert data["kind"] == "prefix" and text["kind"] == "files"
    assert data["documents"] == text["documents"] - 1  # preprocessing skips the empty document
    from transformers import AutoTokenizer

    empty = sum(len(AutoTokenizer.from_pretrained(folder).encode(d)) for d in DOCUMENTS if not d)  # Llama's: a BOS
    assert (data["tokens"], data["bytes"]) == (text["tokens"] - empty, text["bytes"])
    assert data["document_nll_nats"] == pytest.approx([v for v, d in zip(text["document_nll_nats"], DOCUMENTS) if d],
                                                      rel=1e-6)
    assert report["total"]["documents"] == 2 * len(DOCUMENTS) - 1


def test_a_masked_lm_gets_the_masked_token_loss(tmp_path, tokenizer_dir, documents_file):
    """A random tiny BERT: masks drawn as the trainer draws them, the same for the same seed; pieces
    batched with padding score as they do alone; no bits per byte."""
    from transformers import BertConfig, BertForMaskedLM

    tokenizer = load_tokenizer(tokenizer_dir)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=128, max_position_embeddings=40, initializer_range=0.5,
                        pad_token_id=tokenizer.specials.pad)
    folder = tmp_path / "bert"
    BertForMaskedLM(config).save_pretrained(folder)
    tokenizer.save(folder)
    args = (folder, "--input", documents_file, "--per-document")
    batched = evaluate(*args, "--output", tmp_path / "a.json")["total"]
    alone = evaluate(*args, "--output", tmp_path / "b.json", "--batch-tokens", "1")["total"]
    other_seed = evaluate(*args, "--output", tmp_path / "c.json", "--seed", "7")["total"]
    assert batched["bits_per_byte"] is None and batched["masked_tokens"] > 0
    assert batched["document_nll_nats"] == pytest.approx(alone["document_nll_nats"], rel=1e-5)
    assert other_seed["nll_nats"] != pytest.approx(batched["nll_nats"], rel=1e-3)
    tokens = sum(len(ids) for ids in tokenizer.encode(DOCUMENTS))
    assert 0.10 * tokens < batched["masked_tokens"] <= 0.16 * tokens + len(DOCUMENTS) * 2  # 15% by whole words


def test_a_masked_lm_is_scored_as_it_was_trained(modernbert_run, documents_file, tmp_path, capsys):
    """A run dir: pieces of its data.seq_len (64), not the model's context (512), masked as it trained (20%,
    token by token; not the family's 30% by whole words); its export keeps all that, so it scores exactly as
    the run dir (the masking seed the same default for both, not the run's run.seed). A folder made
    elsewhere: the ModernBERT family's 30% (not BERT's 15%) and the model's context."""
    args = ("--input", documents_file, "--per-document", "--work-dir", tmp_path)
    run = evaluate(modernbert_run["run"], *args, "--output", tmp_path / "run.json")
    assert (run["max_length"], run["max_length_from"]) == (64, "the run's data.seq_len")
    assert run["masking"] == {"mask_prob": 0.2, "whole_word": False, "unit": "eojeol", "seed": 1234}
    assert "20% masked (seed 1234), pieces of 64 tokens (the run's data.seq_len)" in capsys.readouterr().out
    export = evaluate(modernbert_run["hf"], *args, "--output", tmp_path / "hf.json")
    assert (export["max_length"], export["masking"]) == (64, run["masking"])
    assert export["total"]["masked_tokens"] == run["total"]["masked_tokens"] > 0
    assert export["total"]["document_nll_nats"] == pytest.approx(run["total"]["document_nll_nats"], rel=1e-6)

    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(modernbert_run["hf"], elsewhere)
    (elsewhere / "pretrain_export.json").unlink()
    folder = evaluate(elsewhere, *args, "--output", tmp_path / "elsewhere.json")
    assert (folder["max_length"], folder["max_length_from"]) == (512, "the model's context")
    folder = evaluate(elsewhere, *args, "--max-length", "64", "--output", tmp_path / "elsewhere64.json")
    assert (folder["max_length"], folder["max_length_from"]) == (64, "--max-length")
    assert folder["masking"]["mask_prob"] == 0.3 and folder["masking"]["whole_word"]  # the family's, not BERT's 0.15
    capped = evaluate(modernbert_run["run"], *args, "--max-length", "4096", "--output", tmp_path / "capped.json")
    assert (capped["max_length"], capped["max_length_from"]) == (512, "the model's context")


def test_a_masked_lm_scores_a_prefix_as_its_text(modernbert_run, documents_file, tmp_path):
    """Data made with --append-eod ends each document with the run's end-of-text token, which an encoder's
    exported tokenizer does not name as eos (its eos is its SEP): the run dir and its export still read the
    prefix without it, so it scores exactly as the text it was made from."""
    preprocess(documents_file, modernbert_run["run"] / "tokenizer", tmp_path / "docs", "--append-eod")
    for model in (modernbert_run["run"], modernbert_run["hf"]):
        report = evaluate(model, "--input", documents_file, tmp_path / "docs_text_document", "--per-document",
                          "--work-dir", tmp_path, "--output", tmp_path / "eval.json")
        text, data = report["inputs"]
        assert (data["documents"], data["bytes"]) == (text["documents"] - 1, text["bytes"])  # the empty one skipped
        assert data["masked_tokens"] == text["masked_tokens"] > 0
        assert data["document_nll_nats"] == pytest.approx([v for v, d in zip(text["document_nll_nats"], DOCUMENTS)
                                                           if d], rel=1e-6)


def test_token_bytes_are_exact_for_byte_level_bpe(tokenizer_dir, tmp_path, small_corpus):
    from pretrain.tokenization.training import TokenizerTrainingOptions, train_tokenizer

    tokenizer = load_tokenizer(tokenizer_dir)
    table = token_byte_lengths(tokenizer)
    documents = grown_documents(60)
    for document, ids in zip(documents, tokenizer.encode(documents)):
        assert table[ids].sum() == len(document.encode("utf-8"))
    assert not table[list(tokenizer.specials.ids.values())].any()
    for kind, off in (("wordpiece", 0.05), ("spm-bpe", 0.01)):  # approximate: the README gives these bounds
        train_tokenizer(TokenizerTrainingOptions(kind=kind, inputs=[str(small_corpus)], output=str(tmp_path / kind),
                                                 vocab_size=1024))
        other = load_tokenizer(tmp_path / kind)
        counted = sum(token_byte_lengths(other)[ids].sum() for ids in other.encode(documents))
        assert abs(counted / sum(len(d.encode()) for d in documents) - 1) < off, kind


def test_every_rank_runs_as_many_eval_batches_and_every_sample_counts_once():
    rng = np.random.default_rng(0)
    for micro, world in ((3, 2), (4, 1), (2, 3)):
        owners = rng.choice(3, size=37, p=[0.6, 0.35, 0.05])
        owners[owners == 2] = 1 if world == 3 else 2  # with 3 ranks: a source with no sample at all
        per_rank = [source_batches(owners, 3, micro, rank, world) for rank in range(world)]
        assert len({len(batches) for batches in per_rank}) == 1  # ZeRO-3 needs the same forward passes
        counted = sorted(i for batches in per_rank for b in batches if b.counted for i in b.samples)
        assert counted == list(range(len(owners)))
        for batches in zip(*per_rank):  # in step: the same source on every rank
            assert len({b.source for b in batches}) == 1
            assert all(owners[i] == b.source for b in batches for i in b.samples)
        assert any(not b.counted for batches in per_rank for b in batches) or world == 1
    assert source_names(["a/ko_text_document", "b/ko_text_document", "de"]) == ["ko_text_document",
                                                                              "ko_text_document#2", "de"]


def test_the_sources_plot(tmp_path):
    from matplotlib.image import imread

    from pretrain.plots import write_run_plots

    records = []
    for step in range(0, 50, 10):
        records.append({"step": step, "tokens": step * 100, "loss": 7 - step / 20, "lr": 1e-3})
        records.append({"step": step, "tokens": step * 100, "eval_loss": 7 - step / 25, "eval_ppl": 1.0,
                        "eval_bpb": 3 - step / 50, "eval_loss/ko": 7 - step / 20, "eval_bpb/ko": 3 - step / 40,
                        "eval_loss/de": 7 - step / 30, "eval_bpb/de": 3.2 - step / 60})
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    paths = write_run_plots(tmp_path)
    assert [p.name for p in paths] == ["loss.png", "overview.png", "eval_sources.png"]
    image = (imread(paths[2])[..., :3] * 255).round().astype(int)
    half = image.shape[1] // 2
    for color in ((31, 119, 180), (214, 39, 40)):  # the two sources' colours, in both panels
        near = np.abs(image - np.array(color)).max(axis=-1) < 30
        assert near[:, :half].sum() > 200 and near[:, half:].sum() > 200, color


# ------------------------------------------------------------------------------ a 2-rank training run


@pytest.fixture(scope="module")
def blend_run(tmp_path_factory, tokenizer_dir):
    """2 ranks, ZeRO-3, 2 steps on a 0.7 / 0.3 blend of a Korean and a German prefix; 30 valid samples, not
    a multiple of micro batch x ranks (21 + 9: the sources' last blocks leave a rank with nothing, which runs a
    stand-in batch)."""
    root = tmp_path_factory.mktemp("blend")
    documents = grown_documents(300)
    korean = [d for d in documents if any("\uac00" <= ch <= "\ud7a3" for ch in d)]
    prefixes = {}
    for name, texts in (("ko", korean), ("de", [d for d in documents if d not in set(korean)])):
        preprocess(write_jsonl(root / f"{name}.jsonl", texts), tokenizer_dir, root / name, "--append-eod")
        prefixes[name] = root / f"{name}_text_document"
    run_dir = root / "run"
    launch(2, "tiny_clm", run_dir, f"data.tokenizer={tokenizer_dir}",
           f"data.prefixes=[0.7 {prefixes['ko']}, 0.3 {prefixes['de']}]", "data.split=80,20,0", "train.steps=2",
           "train.eval_interval=2", "train.save_interval=2", "train.eval_samples=30", "train.ds_config=zero3",
           "optim.warmup_steps=1", "run.tensorboard=false", timeout=900)
    export_checkpoint(run_dir, root / "hf")
    return {"run": run_dir, "hf": root / "hf", "prefixes": prefixes}


@pytest.mark.slow
def test_the_trainer_reports_loss_and_bits_per_byte_per_source(blend_run, tmp_path):
    """Every figure recomputed from the exported model, sample by sample, per source: the loss from its
    logits, the bytes from the (exact) byte table over the targets."""
    from transformers import AutoModelForCausalLM

    from pretrain.config import load_config
    from pretrain.data.builder import SplitSizes, build_datasets

    run_dir = blend_run["run"]
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if "eval_loss" in r]
    assert [r["step"] for r in evals] == [0, 2]
    model = AutoModelForCausalLM.from_pretrained(blend_run["hf"]).eval()
    tokenizer = load_tokenizer(run_dir / "tokenizer")
    table = token_byte_lengths(tokenizer)
    config = load_config(str(run_dir / "config.yaml"))
    valid = build_datasets(config.data, tokenizer, "clm", config.run.seed, SplitSizes(0, 30, 0), True)["valid"]
    sums = np.zeros((2, 3))
    with torch.no_grad():
        for index in range(len(valid)):
            tokens = valid[index]["tokens"][None]
            logits = model(input_ids=tokens[:, :-1]).logits
            nll = torch.nn.functional.cross_entropy(logits[0].float(), tokens[0, 1:], reduction="sum")
            sums[int(valid.dataset_index[index])] += [float(nll), tokens.shape[1] - 1, table[tokens[0, 1:]].sum()]
    assert sums[:, 1].tolist() == [21 * 64, 9 * 64]  # exactly train.eval_samples, the same set on any ranks
    last = evals[-1]
    for source, name in enumerate(("ko_text_document", "de_text_document")):
        nats, count, covered = sums[source]
        assert last[f"eval_loss/{name}"] == pytest.approx(nats / count, rel=1e-4), name
        assert last[f"eval_bpb/{name}"] == pytest.approx(nats / math.log(2) / covered, rel=1e-4), name
    assert last["eval_loss"] == pytest.approx(sums[:, 0].sum() / sums[:, 1].sum(), rel=1e-4)
    assert last["eval_bpb"] == pytest.approx(sums[:, 0].sum() / math.log(2) / sums[:, 2].sum(), rel=1e-4)
    assert last["eval_bpb/ko_text_document"] != pytest.approx(last["eval_bpb/de_text_document"], rel=1e-2)
    assert (run_dir / "plots" / "eval_sources.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_pretrain_eval_scores_a_run_dir_as_its_export(blend_run, tmp_path):
    """A run dir (as a user runs the command), one of its checkpoints and its export: the same figures."""
    run_dir, prefix = blend_run["run"], blend_run["prefixes"]["de"]
    run_tool("eval", run_dir, "--input", prefix, "--limit", "20", "--output", tmp_path / "run.json")
    reports = [json.loads((tmp_path / "run.json").read_text())]
    for name, model in (("hf", blend_run["hf"]), ("step", run_dir / "checkpoints" / "step00000002")):
        reports.append(evaluate(model, "--input", prefix, "--limit", "20", "--output", tmp_path / f"{name}.json",
                                "--work-dir", tmp_path))
    assert reports[0]["checkpoint"].endswith("step00000002") and reports[1]["checkpoint"] is None
    for report in reports[1:]:
        assert report["total"]["bits_per_byte"] == pytest.approx(reports[0]["total"]["bits_per_byte"], rel=1e-9)
    assert reports[0]["total"]["documents"] == 20 and 1 < reports[0]["total"]["bits_per_byte"] < 10
    assert not list(tmp_path.glob("pretrain-eval-*"))  # the checkpoint's temporary export is gone
