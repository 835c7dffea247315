"""Batch-size ramp-up (train.rampup_batch_size, Megatron-LM's --rampup-batch-size): the schedule, the checks
on it, the plan's micro batch, and on 2 CPU ranks the steps it takes under ZeRO 0, 2 and 3 and across a resume."""

from __future__ import annotations

import json

import pytest

from pretrain.config import ConfigError, load_config, validate
from pretrain.config.schema import TrainConfig
from pretrain.parallel import PlanError, choose_plan, request_from_config
from tests.distributed import launch, preprocess


def test_the_batch_climbs_as_megatrons_ramp_does():
    """start + increment x the whole shares of the ramp's samples passed (Megatron's
    RampupBatchsizeNumMicroBatchesCalculator), then global_batch for good."""
    train = TrainConfig(global_batch=16, rampup_batch_size=[4, 4, 30])  # 3 increments: a share is 10 samples
    consumed, batches = 0, []
    while consumed < 64:
        batches.append(train.global_batch_at(consumed))
        consumed += batches[-1]
    assert batches == [4, 4, 4, 8, 12, 16, 16]  # taken at 0, 4, 8 | 12 | 20 | 32, 48 samples consumed
    assert [train.global_batch_at(c) for c in (9, 10, 19, 20, 29, 30, 10**12)] == [4, 8, 8, 12, 12, 16, 16]
    assert TrainConfig(global_batch=16).global_batch_at(0) == 16
    assert [train.samples_for(steps) for steps in (0, 3, 7, 9)] == [0, 12, 64, 96]
    assert TrainConfig(global_batch=16).samples_for(9) == 144
    base = TrainConfig(global_batch=4608, rampup_batch_size=[768, 256, 48828125])
    assert [base.batch_multiple(c) for c in (0, 48828124, 48828125)] == [256, 256, 4608]  # none left once over


def test_a_ramp_that_cannot_be_split_is_refused_with_every_reason():
    def problems(*overrides: str, world: int = 2) -> str:
        with pytest.raises(ConfigError) as caught:
            validate(load_config("tiny_clm", list(overrides)), world, with_data=False)
        return str(caught.value)

    assert "three whole numbers" in problems("train.rampup_batch_size=[4, 4]")
    assert "to exactly train.global_batch=16" in problems("train.rampup_batch_size=[6, 4, 100]")
    text = problems("train.global_batch=15", "train.rampup_batch_size=[16, 4, 100]")
    assert "global_batch=15 is not a multiple" in text and "not above the start" in text  # both at once


def plan_for(*overrides: str, world: int = 2, consumed: int = 0):
    config = load_config("tiny_clm", list(overrides))
    return choose_plan(request_from_config(config, 1000, world, world, 64 * 2**30, consumed_samples=consumed))


def test_the_plan_picks_a_micro_batch_that_splits_the_ramps_smallest_batch():
    """Without the ramp, tiny GPT-2 on 2 ranks takes all 8 samples per rank in one micro batch; the ramp's
    first batch of 4 samples holds only 2 per rank. Once a resumed run is past the ramp, only the global batch
    counts."""
    assert plan_for().micro_batch == 8
    assert plan_for("train.rampup_batch_size=[4, 4, 100]").micro_batch == 2
    assert plan_for("train.rampup_batch_size=[4, 4, 100]", consumed=100).micro_batch == 8


def test_batches_ahead_that_do_not_split_on_these_ranks_are_refused_until_the_ramp_is_over():
    ramp = ("train.micro_batch=4", "train.rampup_batch_size=[4, 4, 100]")
    with pytest.raises(PlanError, match="multiples of 4 only, not of micro batch x data-parallel size = 4 x 2"):
        plan_for(*ramp)
    with pytest.raises(PlanError, match="multiples of 4 only, not of the data-parallel size 8"):
        plan_for("train.rampup_batch_size=[4, 4, 100]", world=8)
    assert plan_for(*ramp, consumed=100).micro_batch == 4  # resumed after the ramp: 16 = 4 x 2 x 2


def ramp_records(run_dir) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if "loss" in r]


@pytest.fixture(scope="module")
def ramp_data(tmp_path_factory, small_corpus, tokenizer_dir) -> tuple[str, ...]:
    folder = tmp_path_factory.mktemp("rampdata")
    preprocess(small_corpus, tokenizer_dir, folder / "data", "--append-eod")
    return (f"data.tokenizer={tokenizer_dir}", f"data.prefixes=[{folder / 'data_text_document'}]", "data.split=90,10,0",
            "train.steps=6", "train.global_batch=8", "train.micro_batch=2", "train.log_interval=1",
            "train.eval_interval=100", "train.eval_samples=8", "train.save_interval=100", "train.stop_check_interval=1")


@pytest.mark.slow
def test_ramped_steps_equal_the_same_samples_taken_at_a_constant_batch(tmp_path, ramp_data):
    """With a learning rate too small to move the weights, a step's loss and gradient norm depend only on its
    samples: the ramp 4, 4, 8, 8, ... (global batch 8, micro batch 2 on 2 ranks: accumulation 1, then 2) must
    give, step for step, what a constant batch of 4 (its first two steps) and of 8 (its later ones) give on the
    same samples, under ZeRO 2 and 3: each step's gradient is its own samples', averaged over all of them."""
    still = (*ramp_data, "optim.lr=1e-12", "optim.min_lr=0", "optim.warmup_steps=0")
    launch(2, "tiny_clm", tmp_path / "constant", *still)
    constant = ramp_records(tmp_path / "constant")
    # the ramp's first two steps alone: a constant batch of 4 over twice the steps reads the same samples
    launch(2, "tiny_clm", tmp_path / "constant4", *still, "train.global_batch=4", "train.steps=12")
    constant4 = ramp_records(tmp_path / "constant4")
    for stage in ("zero2", "zero3"):
        launch(2, "tiny_clm", tmp_path / stage, *still, "train.rampup_batch_size=[4, 4, 8]", f"train.ds_config={stage}")
        records = ramp_records(tmp_path / stage)
        assert [r["step"] for r in records] == list(range(1, 7)), stage
        assert [r["global_batch"] for r in records] == [4, 4, 8, 8, 8, 8], stage
        assert [r["tokens"] for r in records] == [64 * n for n in (4, 8, 16, 24, 32, 40)], stage
        first_two = (records[0]["loss"] + records[1]["loss"]) / 2  # CLM: every sample has 64 labelled tokens
        assert first_two == pytest.approx(constant[0]["loss"], rel=1e-5), stage
        for ramped, same in [*zip(records[:2], constant4[:2]), *zip(records[2:], constant[1:5])]:
            assert ramped["loss"] == pytest.approx(same["loss"], rel=1e-5), (stage, ramped["step"])
            assert ramped["grad_norm"] == pytest.approx(same["grad_norm"], rel=1e-4), (stage, ramped["step"])


@pytest.mark.slow
def test_a_run_resumed_inside_the_ramp_follows_the_uninterrupted_one(tmp_path, ramp_data):
    """The ramp 4, 8, 8, ... (accumulation 1, then 2) under the default plan, learning: stopped after its first
    step and resumed, the same losses as uninterrupted. One step of accumulation 1 leaves DeepSpeed's running
    count of micro batches odd, so without the step's end placed at its last micro batch the uninterrupted run
    would update after the first of each later step's two (a resumed engine counts from 0 again)."""
    ramp = (*ramp_data, "train.rampup_batch_size=[4, 4, 4]", "optim.warmup_steps=2")
    launch(2, "tiny_clm", tmp_path / "whole", *ramp)
    launch(2, "tiny_clm", tmp_path / "resumed", *ramp, "train.exit_interval=1", expect=75)
    launch(2, "tiny_clm", tmp_path / "resumed", *ramp)
    whole, resumed = ramp_records(tmp_path / "whole"), ramp_records(tmp_path / "resumed")
    assert [r["global_batch"] for r in whole] == [4, 8, 8, 8, 8, 8]
    assert [r["step"] for r in resumed] == list(range(1, 7))
    for a, b in zip(resumed, whole):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5), a["step"]
        assert a["tokens"] == b["tokens"]
    assert whole[-1]["loss"] < whole[0]["loss"] - 0.1
    summary = json.loads((tmp_path / "resumed" / "summary.json").read_text())
    assert summary["tokens_seen"] == 64 * 44
