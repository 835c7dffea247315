"""Every path a GPU run can take, rehearsed on CPU before any GPU meets it.

A bf16 GPU run takes one of these paths, chosen by the parallel plan and the config: fp32 weights under
bf16 autocast (no ZeRO, the default where the model fits) or bf16 weights (ZeRO-1, 2, 3); the chunked
LM head (the default); compiled blocks (the GPU default; inductor's code generation for the blocks is
checked on its own by tests/test_kernels.py's inductor gradient test); this
project's GPT-2 block; selective or full recompute; GPT-2, BERT, Llama or ModernBERT. Each case below is a short run on
1 or 2 CPU ranks that trains, evaluates, saves, stops, and resumes from its checkpoint to the end,
as a GPU run would, so a crash a CPU can show (last round's head under autocast) is shown here.
What a CPU cannot run (flash kernels, FusedAdam, Triton, CUDA graphs) is covered by tests/test_gpu.py.
"""

from __future__ import annotations

import math
import re

import pytest

from tests.distributed import launch, metrics, preprocess, rank_logs

pytestmark = pytest.mark.slow
STOP, STEPS = 2, 4
COMMON = ("train.precision=bf16", f"train.steps={STEPS}", "optim.warmup_steps=1", "train.log_interval=1",
          f"train.eval_interval={STOP}", "train.eval_samples=16", "data.split=90,10,0", "train.stop_check_interval=1",
          "train.global_batch=8")

QUICK_COMPILE = ("model.compile=true", "model.compile_backend=aot_eager")  # dynamo + AOTAutograd, eager kernels
CASES = {
    # name: (objective, ranks, overrides). The first is the default GPU configuration. The compiled cases
    # use aot_eager, which keeps the graphs (and their interplay with ZeRO's hooks and recompute) but saves
    # CI the minutes of generating C++ code for each (tests/test_kernels.py compiles the blocks with inductor).
    "gpt2 zero0 autocast compiled": ("clm", 1, QUICK_COMPILE),
    "gpt2 zero1 own-block selective": ("clm", 2, ("train.ds_config=zero1", "model.block=own",
                                                  "model.activation_checkpointing=selective", "model.checkpoint_layers=1")),
    "gpt2 zero2 full-recompute": ("clm", 2, ("train.ds_config=zero2", "model.activation_checkpointing=full")),
    "gpt2 zero3 compiled selective": ("clm", 2, ("train.ds_config=zero3", *QUICK_COMPILE,
                                                 "model.activation_checkpointing=selective", "model.checkpoint_layers=1")),
    "bert zero0 autocast compiled": ("mlm", 1, QUICK_COMPILE),
    "bert zero3 full-recompute": ("mlm", 2, ("train.ds_config=zero3", "model.activation_checkpointing=full")),
    # the Llama-style decoder, packed documents masked (tiny_llama's data.document_mask)
    "llama zero0 autocast compiled": ("llama", 1, QUICK_COMPILE),
    "llama zero1 full-recompute": ("llama", 2, ("train.ds_config=zero1", "model.activation_checkpointing=full")),
    "llama zero2 compiled": ("llama", 2, ("train.ds_config=zero2", *QUICK_COMPILE)),
    "llama zero3 untied compiled selective": ("llama", 2, ("train.ds_config=zero3", "model.tie_embeddings=false",
                                                           *QUICK_COMPILE, "model.activation_checkpointing=selective",
                                                           "model.checkpoint_layers=1")),
    # the ModernBERT-style encoder, alternating local and global attention: its default (packed documents
    # without padding; fp32 weights under autocast, where modernbert_base's plan puts it; StableAdamW, as the
    # paper trains), and padded sentence pairs (data.document_mask=false) with bf16 weights
    "modernbert zero0 autocast compiled stable-adamw": ("modernbert", 1, (*QUICK_COMPILE, "train.ds_config=zero0",
                                                                          "optim.optimizer=stable_adamw")),
    "modernbert zero1 full-recompute": ("modernbert", 2, ("train.ds_config=zero1", "model.activation_checkpointing=full")),
    "modernbert zero2 padded compiled selective": ("modernbert", 2, ("train.ds_config=zero2", *QUICK_COMPILE,
                                                                     "data.document_mask=false",
                                                                     "model.activation_checkpointing=selective",
                                                                     "model.checkpoint_layers=1")),
}


@pytest.fixture(scope="module")
def data(tmp_path_factory, small_corpus, tokenizer_dir) -> dict:
    folder = tmp_path_factory.mktemp("rehearsal")
    preprocess(small_corpus, tokenizer_dir, folder / "d", "--append-eod")
    preprocess(small_corpus, tokenizer_dir, folder / "d", "--split-sentences")
    return {"clm": ("tiny_clm", folder / "d_text_document"), "mlm": ("tiny_mlm", folder / "d_text_sentence"),
            "llama": ("tiny_llama", folder / "d_text_document"),
            "modernbert": ("modernbert_tiny", folder / "d_text_sentence"), "tokenizer": tokenizer_dir}


@pytest.mark.parametrize("case", list(CASES))
def test_each_gpu_path_trains_evaluates_saves_and_resumes_on_cpu(tmp_path, data, case):
    objective, ranks, overrides = CASES[case]
    config, prefix = data[objective]
    args = (f"data.tokenizer={data['tokenizer']}", f"data.prefixes=[{prefix}]", *COMMON, *overrides)
    run_dir = tmp_path / "run"
    launch(ranks, config, run_dir, *args, f"train.exit_interval={STOP}", expect=75)
    assert (run_dir / "checkpoints" / f"step{STOP:08d}" / "COMPLETE").exists()
    launch(ranks, config, run_dir, *args)
    losses, evals = metrics(run_dir)
    assert sorted(losses) == list(range(1, STEPS + 1)) and all(math.isfinite(v) for v in losses.values())
    assert [e["step"] for e in evals] == [0, STOP, STEPS] and all(math.isfinite(e["eval_loss"]) for e in evals)
    assert evals[-1]["eval_loss"] < evals[0]["eval_loss"]
    assert (run_dir / "checkpoints" / f"step{STEPS:08d}" / "COMPLETE").exists()
    log = rank_logs(run_dir)[0]
    assert f"resumed from step{STOP:08d}" in log
    assert "bf16" in log and "torch.compile of" not in log  # the precision asked for; nothing fell back to eager
    if "model.compile=true" in overrides:
        assert re.search(r"torch.compile: each of the \d transformer blocks", log)
    if "optim.optimizer=stable_adamw" in overrides:
        assert "optimizer StableAdamW" in log
    # packed documents masked from each other (Llama's and ModernBERT's default) unless the case pads
    assert ("document mask:" in log) == (objective in ("llama", "modernbert") and "data.document_mask=false" not in overrides)
    if "model.block=own" in overrides:
        assert "this project's compact block" in log
