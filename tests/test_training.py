"""Pretraining on 2 CPU ranks (gloo) with real ZeRO-3 partitioning, on the real ko/de corpora and
the real multilingual BPE: initial loss, learning, partitioning, exact resume, resume on another
world size, and export to Hugging Face."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest
import torch

from tests.distributed import launch, metrics, partition_sizes, preprocess

STEPS, STOP = 10, 5
COMMON = (f"train.steps={STEPS}", "train.log_interval=1", f"train.eval_interval={STOP}", f"train.save_interval={STOP}",
          "optim.warmup_steps=3", "train.eval_samples=16", "data.split=80,20,0")


@pytest.fixture(scope="module", params=["clm", "mlm"])
def runs(request, tmp_path_factory, small_corpus, shared_bpe):
    """Launch every run the tests below inspect, once per objective."""
    objective = request.param
    root = tmp_path_factory.mktemp(objective)
    if objective == "clm":
        preprocess(small_corpus, shared_bpe, root / "data", "--append-eod")
        prefix, config = root / "data_text_document", "tiny_clm"
    else:
        preprocess(small_corpus, shared_bpe, root / "data", "--split-sentences")
        prefix, config = root / "data_text_sentence", "tiny_mlm"
    data = (f"data.tokenizer={shared_bpe}", f"data.prefixes=[{prefix}]", *COMMON)
    out = {"objective": objective, "prefix": prefix, "tokenizer": shared_bpe, "config": config, "data": data}
    out["full"] = launch(2, config, root / "full", *data)
    launch(2, config, root / "resumed", *data, f"train.exit_interval={STOP}", expect=75)  # 75: stopped early
    shutil.copytree(root / "resumed", root / "one_rank")  # the same step-5 checkpoint, resumed on 1 rank
    launch(2, config, root / "resumed", *data)
    launch(1, config, root / "one_rank", *data)
    out["fresh_one_rank"] = launch(1, config, root / "fresh_one_rank", *data, "train.exit_interval=1", expect=75)
    variants = {"layer_hooks": "model.zero3_whole_blocks=false", "checkpointed": "model.activation_checkpointing=true"}
    for name, flags in variants.items():
        launch(2, config, root / name, *data, flags, f"train.exit_interval={STOP}", expect=75)
    out["dirs"] = {name: root / name for name in ("full", "resumed", "one_rank", "fresh_one_rank", "layer_hooks",
                                                  "checkpointed")}
    return out


def test_initial_loss_is_ln_vocab_on_one_and_two_ranks(runs):
    two, _ = metrics(runs["dirs"]["full"])
    one, _ = metrics(runs["dirs"]["fresh_one_rank"])
    expected = math.log(50261)
    assert abs(two[1] - expected) / expected < 0.02, two[1]
    assert abs(one[1] - expected) / expected < 0.02, one[1]
    assert one[1] == pytest.approx(two[1], rel=1e-4)  # same initialization whatever the world size


def test_loss_falls(runs):
    losses, evals = metrics(runs["dirs"]["full"])
    assert losses[STEPS] < losses[1] - 0.5
    assert evals[-1]["eval_loss"] < evals[0]["eval_loss"]


def test_parameters_are_partitioned_across_ranks(runs):
    sizes = partition_sizes(runs["full"].stdout + runs["full"].stderr)
    assert set(sizes) == {0, 1}
    total = sizes[0][1]
    for held, whole in sizes.values():
        assert whole == total and held <= total // 2 + 1000


def test_resume_reproduces_the_uninterrupted_run(runs):
    full, _ = metrics(runs["dirs"]["full"])
    resumed, resumed_evals = metrics(runs["dirs"]["resumed"])
    assert sorted(resumed) == list(range(1, STEPS + 1))
    for step in range(STOP + 1, STEPS + 1):
        assert resumed[step] == pytest.approx(full[step], rel=1e-5, abs=1e-6), step
    assert resumed_evals[-1]["eval_loss"] == pytest.approx(metrics(runs["dirs"]["full"])[1][-1]["eval_loss"], rel=1e-5)


def test_resume_on_one_rank_from_two(runs):
    full, _ = metrics(runs["dirs"]["full"])
    one, _ = metrics(runs["dirs"]["one_rank"])
    assert (runs["dirs"]["one_rank"] / "checkpoints" / f"step{STOP:08d}_universal").exists()
    for step in range(STOP + 1, STEPS + 1):
        assert one[step] == pytest.approx(full[step], rel=1e-4), step


def test_whole_block_gathering_and_recompute_leave_the_curve_unchanged(runs):
    """ZeRO-3 gathering a block at once (the default), through per-layer hooks, or with activation
    checkpointing (its forward runs twice): the same arithmetic, the same losses."""
    assert "ZeRO-3 gathers each of the 2 transformer blocks' parameters at once" in runs["full"].stderr
    full, _ = metrics(runs["dirs"]["full"])
    for name in ("layer_hooks", "checkpointed"):
        other, _ = metrics(runs["dirs"][name])
        assert sorted(other) == list(range(1, STOP + 1))
        for step in other:
            assert other[step] == pytest.approx(full[step], rel=1e-5, abs=1e-6), (name, step)


def test_export_matches_the_trainers_eval_loss(runs, tmp_path):
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

    from pretrain.config import load_config
    from pretrain.data.builder import SplitSizes, build_datasets
    from pretrain.tokenization import load_tokenizer
    from tests.conftest import run_tool

    run_dir = runs["dirs"]["full"]
    run_tool("export_hf", run_dir, tmp_path / "hf")
    auto = AutoModelForCausalLM if runs["objective"] == "clm" else AutoModelForMaskedLM
    model = auto.from_pretrained(tmp_path / "hf").eval()
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "hf")
    assert len(tokenizer) == 50261 and tokenizer.mask_token == "<mask>"
    config = load_config(str(run_dir / "config.yaml"))
    valid = build_datasets(config, load_tokenizer(run_dir / "tokenizer"), SplitSizes(0, 16, 0), True)["valid"]
    total = count = 0.0
    with torch.no_grad():
        for i in range(len(valid)):
            sample = {k: v[None] for k, v in valid[i].items()}
            if runs["objective"] == "clm":
                logits = model(input_ids=sample["tokens"][:, :-1]).logits
                labels = sample["tokens"][:, 1:]
            else:
                logits = model(input_ids=sample["input_ids"], attention_mask=sample["attention_mask"],
                               token_type_ids=sample["token_type_ids"]).logits
                labels = sample["labels"]
            losses = torch.nn.functional.cross_entropy(logits[0].float(), labels[0], reduction="none", ignore_index=-100)
            total += float(losses.sum())
            count += float((labels != -100).sum())
    _, evals = metrics(run_dir)
    assert total / count == pytest.approx(evals[-1]["eval_loss"], rel=1e-4)
    if runs["objective"] == "clm":
        prompt = tokenizer("한국어", return_tensors="pt").input_ids
        generated = model.generate(prompt, max_new_tokens=8, do_sample=False)
        assert generated.shape[1] == prompt.shape[1] + 8


def test_run_dir_layout(runs):
    run_dir = runs["dirs"]["full"]
    assert {"config.yaml", "metrics.jsonl", "tensorboard", "checkpoints", "tokenizer", "model"} <= {
        p.name for p in run_dir.iterdir()}
    losses, evals = metrics(run_dir)
    records = [r for r in (run_dir / "metrics.jsonl").read_text().splitlines() if '"loss"' in r]
    assert all(key in records[0] for key in ('"step"', '"lr"', '"grad_norm"', '"tokens_per_s"', '"mfu"'))
    assert {"eval_loss", "eval_ppl"} <= set(evals[0])
    assert (run_dir / "checkpoints" / "latest").read_text().strip() == f"step{STEPS:08d}"
    assert np.isfinite(list(losses.values())).all()
