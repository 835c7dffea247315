"""Pretraining on 2 CPU ranks (gloo): the default parallel plan (no ZeRO for these tiny models), ZeRO-1
and real ZeRO-3 partitioning, initial loss, learning, exact resume, resume on another world size
(universal checkpoints for ZeRO), selective and full recompute, and export to Hugging Face."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch

from tests.distributed import launch, metrics, partition_sizes, preprocess, rank_logs

STEPS, STOP = 10, 5
pytestmark = pytest.mark.slow
COMMON = (f"train.steps={STEPS}", "train.log_interval=1", f"train.eval_interval={STOP}", f"train.save_interval={STOP}",
          "optim.warmup_steps=3", "train.eval_samples=16", "data.split=80,20,0", "train.stop_check_interval=1")


def stop_then_resume(config: str, root, name: str, data: tuple, *flags: str, on: tuple[int, ...] = (2,)) -> dict:
    """Stop at step STOP (exit 75), then resume each copy of the run dir on the given numbers of ranks."""
    first = root / f"{name}-first"
    launch(2, config, first, *data, *flags, f"train.exit_interval={STOP}", expect=75)
    dirs = {}
    for ranks in on:
        dirs[ranks] = root / f"{name}-on{ranks}"
        shutil.copytree(first, dirs[ranks])
        launch(ranks, config, dirs[ranks], *data, *flags)
    return dirs


# imported by every process of a watched launch: a rank (tools/train.py) leaves a file when it starts, and
# another when its interpreter finalizes (atexit), which it must not (pretrain.cli.train.cli)
EXIT_WATCH = """
import atexit, os, sys
if sys.argv and sys.argv[0].endswith("tools/train.py"):
    watch = os.path.join(os.environ["EXIT_WATCH_DIR"], f"{os.environ.get('RANK', '?')}-{os.getpid()}")
    open(watch + ".started", "w").close()
    atexit.register(lambda: open(watch + ".finalized", "w").close())
"""


@pytest.fixture(scope="module", params=["clm", "mlm"])
def runs(request, tmp_path_factory, small_corpus, tokenizer_dir):
    """Launch every run the tests below inspect, once per objective."""
    objective = request.param
    root = tmp_path_factory.mktemp(objective)
    if objective == "clm":
        preprocess(small_corpus, tokenizer_dir, root / "data", "--append-eod")
        prefix, config = root / "data_text_document", "tiny_clm"
    else:
        preprocess(small_corpus, tokenizer_dir, root / "data", "--split-sentences")
        prefix, config = root / "data_text_sentence", "tiny_mlm"
    data = (f"data.tokenizer={tokenizer_dir}", f"data.prefixes=[{prefix}]", *COMMON)
    out = {"objective": objective, "prefix": prefix, "tokenizer": tokenizer_dir, "config": config, "dirs": {}}
    dirs = out["dirs"]
    out["exits"] = exits = root / "exits"  # what the ranks of the zero3 run did at their end (test_a_rank_ends...)
    exits.mkdir()
    (exits / "sitecustomize.py").write_text(EXIT_WATCH)
    for stage in ("auto", "zero1", "zero3") if objective == "clm" else ("auto", "zero3"):
        dirs[stage] = root / stage
        watch = {"PYTHONPATH": str(exits), "EXIT_WATCH_DIR": str(exits)} if stage == "zero3" else None
        out[stage] = launch(2, config, dirs[stage], *data, f"train.ds_config={stage}", extra_env=watch)
    auto = stop_then_resume(config, root, "auto", data, on=(2, 1))
    dirs["auto_resumed"], dirs["auto_on1"] = auto[2], auto[1]
    zero3 = stop_then_resume(config, root, "zero3", data, "train.ds_config=zero3", on=(2, 1) if objective == "clm" else (1,))
    dirs.update({f"zero3_on{ranks}": path for ranks, path in zero3.items()})
    if objective == "clm":
        dirs["zero1_on1"] = stop_then_resume(config, root, "zero1", data, "train.ds_config=zero1", on=(1,))[1]
        variants = {"layer_hooks": ("train.ds_config=zero3", "model.zero3_whole_blocks=false"),
                    "zero3_full_recompute": ("train.ds_config=zero3", "model.activation_checkpointing=full"),
                    "selective": ("model.activation_checkpointing=selective", "model.checkpoint_layers=1")}
        for name, flags in variants.items():
            dirs[name] = root / name
            out[name] = launch(2, config, dirs[name], *data, *flags, f"train.exit_interval={STOP}", expect=75)
        dirs["fresh_one_rank"] = root / "fresh_one_rank"
        launch(1, config, dirs["fresh_one_rank"], *data, "train.exit_interval=1", expect=75)
        # begun on one rank, resumed on two: rank 1 waits for rank 0's conversion by its files
        dirs["zero3_from1"] = root / "zero3_from1"
        launch(1, config, dirs["zero3_from1"], *data, "train.ds_config=zero3", f"train.exit_interval={STOP}", expect=75)
        launch(2, config, dirs["zero3_from1"], *data, "train.ds_config=zero3")
    return out


def losses(run_dir) -> dict[int, float]:
    return metrics(run_dir)[0]


def assert_same_curve(got: dict[int, float], want: dict[int, float], steps, rel: float, what: str) -> None:
    for step in steps:
        assert got[step] == pytest.approx(want[step], rel=rel, abs=1e-6), (what, step, got[step], want[step])


def test_default_plan_needs_no_zero_for_a_model_that_fits(runs):
    text = runs["auto"].stderr
    assert "parallel plan: ZeRO-0, micro batch 8 x accumulation 1, recompute none" in text
    assert "ZeRO stage 0" in text and "clipping to 1 on the device" in text


def test_initial_loss_is_ln_vocab_on_one_and_two_ranks(runs):
    from pretrain.tokenization import load_tokenizer

    expected = math.log(load_tokenizer(runs["tokenizer"]).vocab_size)
    two = losses(runs["dirs"]["auto"])
    assert abs(two[1] - expected) / expected < 0.03, (two[1], expected)
    if runs["objective"] == "clm":
        one = losses(runs["dirs"]["fresh_one_rank"])
        assert one[1] == pytest.approx(two[1], rel=1e-4)  # same initialization whatever the world size


def test_a_rank_ends_without_finalizing_the_interpreter(runs):
    """With a gloo group alive (DeepSpeed's engine keeps some referenced from C++), a finalizing interpreter
    can abort a rank after its work is done (SIGABRT, the launcher's exit 250): a rank that finished ends with
    os._exit, having written everything (its summary, its log)."""
    exits = runs["exits"]
    assert len(list(exits.glob("*.started"))) == 2, sorted(p.name for p in exits.iterdir())  # the watch saw both ranks
    assert not list(exits.glob("*.finalized")), sorted(p.name for p in exits.iterdir())
    run_dir = runs["dirs"]["zero3"]
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "finished"
    assert "run summary (finished)" in rank_logs(run_dir)[0]  # its log file flushed before the end


def test_loss_falls(runs):
    curve, evals = metrics(runs["dirs"]["auto"])
    assert curve[STEPS] < curve[1] - 0.3
    assert evals[-1]["eval_loss"] < evals[0]["eval_loss"]


def test_zero_stages_give_the_same_losses(runs):
    """The same run without ZeRO, with ZeRO-1 and with ZeRO-3 (real partitioning): rel 1e-4 over 10 steps."""
    reference = losses(runs["dirs"]["auto"])
    for stage in ("zero1", "zero3"):
        if stage in runs["dirs"]:
            assert_same_curve(losses(runs["dirs"][stage]), reference, range(1, STEPS + 1), 1e-4, stage)


def test_zero3_partitions_parameters_across_ranks(runs):
    sizes = partition_sizes(runs["dirs"]["zero3"])
    assert set(sizes) == {0, 1}
    total = sizes[0][1]
    for held, whole in sizes.values():
        assert whole == total and held <= total // 2 + 1000
    assert "ZeRO-3 gathers each of the 2 transformer blocks' parameters at once" in runs["zero3"].stderr


def test_resume_reproduces_the_uninterrupted_run(runs):
    """Exact resume under the default plan and under ZeRO-3: the same data order, the same losses."""
    for resumed, full in (("auto_resumed", "auto"), ("zero3_on2", "zero3")):
        if resumed not in runs["dirs"]:
            continue
        got, evals = metrics(runs["dirs"][resumed])
        assert sorted(got) == list(range(1, STEPS + 1))
        assert_same_curve(got, losses(runs["dirs"][full]), range(STOP + 1, STEPS + 1), 1e-5, resumed)
        assert evals[-1]["eval_loss"] == pytest.approx(metrics(runs["dirs"][full])[1][-1]["eval_loss"], rel=1e-5)
        summaries = [json.loads((runs["dirs"][name] / "summary.json").read_text()) for name in (resumed, full)]
        assert summaries[0]["tokens_seen"] == summaries[1]["tokens_seen"]  # counted across both launches
        assert summaries[0]["wall_time_s"] > summaries[0]["this_launch_s"] > 0


def test_resume_on_another_number_of_ranks(runs):
    """On one rank from two, and on two from one: without ZeRO every rank saved the whole states; ZeRO-1 and
    ZeRO-3 checkpoints go through the universal format."""
    dirs = runs["dirs"]
    cases = [("auto_on1", "auto"), ("zero3_on1", "zero3"), ("zero1_on1", "zero1"), ("zero3_from1", "zero3")]
    for resumed, full in cases:
        if resumed not in dirs:
            continue
        assert_same_curve(losses(dirs[resumed]), losses(dirs[full]), range(STOP + 1, STEPS + 1), 1e-4, resumed)
        universal = (dirs[resumed] / "checkpoints" / f"step{STOP:08d}_universal").exists()
        assert universal == (full != "auto"), resumed


def test_block_gathering_and_recompute_leave_the_curve_unchanged(runs):
    """ZeRO-3 gathering a block at once (the default) or through per-layer hooks, full recompute under
    ZeRO-3, selective recompute (1 of 2 blocks) without ZeRO: the same arithmetic, the same losses."""
    if runs["objective"] != "clm":
        pytest.skip("the variants run for the causal LM")
    dirs = runs["dirs"]
    assert "activation checkpointing: 1 of 2 transformer blocks recompute" in runs["selective"].stderr
    assert "recompute selective (1 of 2 blocks)" in runs["selective"].stderr
    for name, reference in (("layer_hooks", "zero3"), ("zero3_full_recompute", "zero3"), ("selective", "auto")):
        other = losses(dirs[name])
        assert sorted(other) == list(range(1, STOP + 1))
        assert_same_curve(other, losses(dirs[reference]), other, 1e-5, name)


def test_export_matches_the_trainers_eval_loss(runs, tmp_path):
    """Exported from a run without ZeRO (whole states) and from a ZeRO-3 run (gathered partitions)."""
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

    from pretrain.config import load_config
    from pretrain.data.builder import SplitSizes, build_datasets
    from pretrain.presets import get_preset
    from pretrain.tokenization import load_tokenizer
    from tests.conftest import run_tool

    for name in ("auto", "zero3"):
        run_dir = runs["dirs"][name]
        run_tool("export_hf", run_dir, tmp_path / name)
        auto = AutoModelForCausalLM if runs["objective"] == "clm" else AutoModelForMaskedLM
        model = auto.from_pretrained(tmp_path / name).eval()
        tokenizer = AutoTokenizer.from_pretrained(tmp_path / name)
        assert len(tokenizer) == load_tokenizer(runs["tokenizer"]).vocab_size and tokenizer.mask_token == "<mask>"
        assert tokenizer.model_max_length == model.config.max_position_embeddings  # truncation=True cuts there
        config = load_config(str(run_dir / "config.yaml"))
        valid = build_datasets(config.data, load_tokenizer(run_dir / "tokenizer"),
                               get_preset(config.model.preset).objective, config.run.seed, SplitSizes(0, 16, 0),
                               True)["valid"]
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
                per_token = torch.nn.functional.cross_entropy(logits[0].float(), labels[0], reduction="none",
                                                              ignore_index=-100)
                total += float(per_token.sum())
                count += float((labels != -100).sum())
        _, evals = metrics(run_dir)
        assert total / count == pytest.approx(evals[-1]["eval_loss"], rel=1e-4), name
        if runs["objective"] == "clm":
            prompt = tokenizer("한국어", return_tensors="pt").input_ids
            generated = model.generate(prompt, max_new_tokens=8, do_sample=False)
            assert generated.shape[1] == prompt.shape[1] + 8


def test_run_dir_layout_and_metrics(runs):
    run_dir = runs["dirs"]["auto"]
    assert {"config.yaml", "metrics.jsonl", "tensorboard", "checkpoints", "tokenizer", "model"} <= {
        p.name for p in run_dir.iterdir()}
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss" in r]
    assert "tokens_per_s" not in steps[0]  # the launch's first step (warm-up) is never timed
    timed = [r for r in steps if "tokens_per_s" in r]
    assert len(timed) == STEPS - 1
    for record in timed:
        assert {"step", "loss", "lr", "grad_norm", "tokens_per_s", "samples_per_s", "tflops_per_device", "mfu", "hfu",
                "memory_gib", "step_time_s"} <= set(record)
        assert 0 < record["mfu"] <= record["hfu"] * (1 + 1e-9)
    selective = [json.loads(line) for line in (runs["dirs"].get("selective", run_dir) / "metrics.jsonl")
                 .read_text().splitlines() if '"hfu"' in line]
    if "selective" in runs["dirs"]:  # one of two blocks recomputes: HFU counts its extra forward, MFU does not
        assert all(r["hfu"] > r["mfu"] * 1.05 for r in selective)
    _, evals = metrics(run_dir)
    assert {"eval_loss", "eval_ppl"} <= set(evals[0])
    assert (run_dir / "checkpoints" / "latest").read_text().strip() == f"step{STEPS:08d}"
    assert np.isfinite(list(losses(run_dir).values())).all()
    for name in ("loss.png", "overview.png"):  # drawn at the end
        assert (run_dir / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["step"] == STEPS
    assert summary["final_train_loss"] == losses(run_dir)[STEPS] and summary["final_eval_loss"] == evals[-1]["eval_loss"]
    assert summary["tokens_seen"] == steps[-1]["tokens"] > 0 and summary["checkpoint"].endswith(f"step{STEPS:08d}")
    assert "run summary (finished)" in runs["auto"].stdout + runs["auto"].stderr
